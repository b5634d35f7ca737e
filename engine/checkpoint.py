"""Atomic, resumable training checkpoints loadable with ``weights_only=True``."""
import argparse
import glob
import os
import re

import torch

from models.checkpoint import load_checkpoint_file

from .distributed import is_main_process


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def args_dict(args):
    """``args`` as plain Python values: no pickled classes, so ``weights_only=True`` loads it."""
    return {k: _plain(v) for k, v in (vars(args) if isinstance(args, argparse.Namespace) else args).items()}


def save_checkpoint(path, model, optimizer=None, scaler=None, epoch=None, args=None, model_ema=None, **extra):
    """Write to a temporary file, then rename: a run killed mid-write never leaves a cut file."""
    if not is_main_process():
        return
    state = {"model": model.state_dict(), "epoch": epoch, "args": args_dict(args or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if model_ema is not None:
        state["model_ema"] = model_ema.module.state_dict()
    state.update(extra)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def epoch_checkpoints(output_dir):
    """``checkpoint-N.pth`` files, newest epoch first."""
    found = []
    for path in glob.glob(os.path.join(output_dir, "checkpoint-*.pth")):
        m = re.fullmatch(r"checkpoint-(\d+)\.pth", os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found, reverse=True)]


def find_resume_checkpoint(output_dir):
    """Newest epoch checkpoint that loads; unreadable ones are reported and skipped."""
    for path in epoch_checkpoints(output_dir):
        try:
            return path, load_checkpoint_file(path)
        except Exception as err:  # a file damaged on disk must not stop the resume
            print(f"auto-resume: skipping unreadable {path}: {err}")
    return None, None


def resume(args, model, optimizer=None, scaler=None, model_ema=None):
    """Restore from ``--resume`` or, with ``--auto_resume``, the newest checkpoint. Returns start epoch."""
    path, ckpt = None, None
    if args.resume:
        path, ckpt = args.resume, load_checkpoint_file(args.resume)
    elif args.auto_resume and args.output_dir:
        path, ckpt = find_resume_checkpoint(args.output_dir)
    if ckpt is None:
        return 0
    model.load_state_dict(ckpt["model"])
    start = 0
    if isinstance(ckpt.get("epoch"), int):
        start = ckpt["epoch"] + 1
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if model_ema is not None and "model_ema" in ckpt:
        model_ema.module.load_state_dict(ckpt["model_ema"])
    if "best" in ckpt and hasattr(args, "best_metric"):
        args.best_metric = ckpt["best"]
    print(f"resumed from {path} (next epoch {start})")
    return start

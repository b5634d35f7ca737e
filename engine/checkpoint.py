"""Training checkpoints: atomic writes that fail in plain words, retention, and resumption that
refuses to mix a run with one of other settings.

Files in ``--output_dir``: ``checkpoint-N.pth`` after epoch N (every ``--save_ckpt_freq`` epochs
and the last), ``checkpoint-best.pth`` (the best validation score, only with a real validation split),
``checkpoint-latest.pth``
(written when a stop is requested, possibly mid-epoch). Each holds where training continues:
``resume = {"epoch": e, "iteration": i}``, the next epoch and the micro-batches of it already done.
"""
import argparse
import errno
import glob
import os
import re
import shutil

import torch

from models import CheckpointReadError, checkpoint_args, load_checkpoint_file
from models.tuning import checkpoint_record, load_model_state, model_state, same_backbone

from .cli import RunError, UserError
from .distributed import from_rank0, is_dist, all_gather_objects, is_main_process
from .provenance import check_same_data

BEST, LATEST = "checkpoint-best.pth", "checkpoint-latest.pth"
_TEMP = re.compile(r"checkpoint-.*\.pth\.tmp\d+$")
_EPOCH = re.compile(r"checkpoint-(\d+)\.pth$")

# Options that may differ between a run and its resumption without changing its result: where
# things are written or read from, how fast, how much is printed or kept.
RUN_CONTROL = frozenset({
    "output_dir", "log_dir", "resume", "auto_resume", "force_resume", "start_epoch", "num_workers", "pin_mem",
    "print_freq", "device", "gpu", "rank", "local_rank", "distributed",
    "dist_timeout", "save_ckpt_freq", "keep_last", "trace_steps", "backend", "strict", "max_bad_fraction",
    "data_root", "prefix_map", "dist_eval", "save_feature", "eval", "force_config", "compile", "compile_mode", "save_ckpt",
    "compile_cache", "class_names", "backbone", "test_best",
    "amp",  # the precision --amp resolved to on this node (amp_requested is compared)
})
LAST_EPOCH = "none (last epoch)"


class CheckpointSaveError(RunError):
    """A checkpoint could not be written; the previous ones are intact."""


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


def _tensor_bytes(obj):
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _mb(n):
    return f"{n / 2 ** 20:.0f} MB"


def save_checkpoint(path, state):
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); main process only.

    Fails with :class:`CheckpointSaveError` in plain words when the disk cannot hold it, leaving
    no temporary file behind and the previous checkpoints as they were.
    """
    if not is_main_process():
        return
    folder = os.path.dirname(os.path.abspath(path))
    need = _tensor_bytes(state) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise CheckpointSaveError(f"no space left on device for {path}: it needs about {_mb(need)}, "
                                  f"{_mb(free)} free in {folder}; nothing was written")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:  # a Python file: a failed write raises OSError with its errno
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(folder).free
            raise CheckpointSaveError(f"no space left on device for {path}: it needs about {_mb(need)}, "
                                      f"{_mb(free)} free in {folder}; the partial file was removed") from e
        if isinstance(e, OSError):
            raise CheckpointSaveError(f"cannot write {path}: {e.strerror or e}; the partial file was removed") from e
        raise


def training_state(model, optimizer=None, scaler=None, model_ema=None, args=None, epoch=None, resume=None,
                   **extra):
    """The dict a checkpoint holds (``epoch`` is the last completed one, as in the release); of a
    linear/LoRA model only the trained tensors, with the mode and the backbone file's reference."""
    state = {"model": model_state(model), "epoch": epoch, "args": args_dict(args or {}), **checkpoint_record(model)}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if model_ema is not None:
        state["model_ema"] = model_state(model_ema.module)
    if resume is not None:
        state["resume"] = dict(resume)
    state.update(extra)
    return state


def provenance(path, ckpt):
    """What a checkpoint's numbers come from, for metrics.json: the file, the epoch it holds and how
    it was chosen (what the checkpoint records; else, by its epoch, none or unknown)."""
    epoch = ckpt.get("epoch")
    selection = ckpt.get("selection")
    if not selection:
        epochs = checkpoint_args(ckpt).get("epochs")
        if isinstance(epoch, int) and isinstance(epochs, int):
            selection = LAST_EPOCH if epoch == epochs - 1 else f"none (epoch {epoch} of {epochs})"
        else:
            selection = f"unknown (the checkpoint records epoch {epoch!r})"
    return {"checkpoint": os.path.abspath(path), "epoch": epoch if isinstance(epoch, int) else _plain(epoch),
            "selection": selection}


def resume_position(ckpt):
    """``(epoch, iteration)`` where training continues after ``ckpt``."""
    if isinstance(ckpt.get("resume"), dict):
        return int(ckpt["resume"]["epoch"]), int(ckpt["resume"].get("iteration", 0))
    if isinstance(ckpt.get("epoch"), int):
        return ckpt["epoch"] + 1, 0
    return 0, 0


class Checkpointer:
    """The checkpoint files of one run folder: saving, retention, stale temporary files, resume."""

    def __init__(self, output_dir, keep_last=None, save=True):
        self.output_dir = output_dir
        self.keep_last = keep_last
        self.saving = save  # --no_save_ckpt: this run writes no checkpoint (it may still resume one)

    def path(self, name):
        return os.path.join(self.output_dir, name)

    def epoch_checkpoints(self):
        """``checkpoint-N.pth`` files, newest epoch first."""
        found = []
        for path in glob.glob(self.path("checkpoint-*.pth")):
            m = _EPOCH.fullmatch(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        return [p for _, p in sorted(found, reverse=True)]

    def remove_stale_temps(self):
        """Delete temporary files that killed runs left in this folder (main process only)."""
        if not self.output_dir or not is_main_process():
            return
        stale = [p for p in glob.glob(self.path("checkpoint-*.pth.tmp*")) if _TEMP.search(os.path.basename(p))]
        size = sum(os.path.getsize(p) for p in stale)
        for p in stale:
            os.remove(p)
        if stale:
            print(f"removed {len(stale)} partial checkpoint file(s) of interrupted runs ({_mb(size)})")

    def save(self, name, state):
        if self.output_dir and self.saving:
            save_checkpoint(self.path(name), state)

    def save_epoch(self, epoch, state):
        """``checkpoint-<epoch>.pth``; a stop checkpoint it supersedes and old ones beyond --keep_last go."""
        if not self.output_dir or not self.saving or not is_main_process():
            return
        self.save(f"checkpoint-{epoch}.pth", state)
        if os.path.exists(self.path(LATEST)):
            os.remove(self.path(LATEST))
        if self.keep_last:
            for old in self.epoch_checkpoints()[self.keep_last:]:
                os.remove(old)

    def _newest(self):
        """``(path, position)`` of the checkpoint furthest into training, or ``(None, None)``."""
        best = (None, None)
        candidates = ([self.path(LATEST)] if os.path.exists(self.path(LATEST)) else []) + self.epoch_checkpoints()
        for path in candidates:
            try:
                position = resume_position(load_checkpoint_file(path, mmap=True))
            except CheckpointReadError as err:  # a file damaged on disk must not stop the resume
                print(f"auto-resume: skipping unreadable {path}: {err}")
                continue
            if best[1] is None or position > best[1]:
                best = (path, position)
            if path != self.path(LATEST):
                break  # epoch checkpoints come newest first: the first readable one is the newest
        return best

    def find_resume(self, resume_arg, auto_resume):
        """The file to resume from (``--resume``, else the newest here with ``--auto_resume``), or None.

        Rank 0 decides for all ranks, so ranks with their own (node-local) output folders agree.
        """
        def decide():
            if resume_arg:
                if not os.path.isfile(resume_arg):
                    raise UserError(f"--resume {resume_arg}: no such checkpoint")
                return resume_arg
            if auto_resume and self.output_dir:
                return self._newest()[0]
            return None
        return from_rank0(decide)


def load_on_all_ranks(path):
    """Load ``path`` on every rank; ranks that cannot see the file get rank 0's copy."""
    if not is_dist() or all(all_gather_objects(os.path.isfile(path))):
        return load_checkpoint_file(path)
    return from_rank0(lambda: load_checkpoint_file(path))


def changed_args(recorded, current):
    """``[(name, recorded value, current value)]`` of the result-changing options that differ."""
    current = args_dict(current)
    out = []
    for key in sorted(set(recorded) & set(current)):
        if key in RUN_CONTROL or key.startswith("_"):
            continue
        if recorded[key] != current[key]:
            out.append((key, recorded[key], current[key]))
    return out


def check_same_run(path, ckpt, args, ignore=()):
    """Refuse to resume ``ckpt`` under options that change the result, unless ``--force_resume``."""
    recorded = ckpt.get("args") or {}
    if recorded.get("amp_requested") == "auto" and recorded.get("amp") not in (None, getattr(args, "amp", None)):
        print(f"note: --amp auto means {args.amp} on this machine; the run so far used {recorded['amp']}")
    diff = [d for d in changed_args(recorded, args) if d[0] not in ignore]
    if not diff:
        return
    # amp_requested is --amp as typed (amp itself is what it resolved to on the machine)
    lines = "\n".join(f"    --{'amp' if k == 'amp_requested' else k}: {old!r} in the checkpoint, {new!r} now"
                       for k, old, new in diff)
    if getattr(args, "force_resume", False):
        print(f"WARNING: resuming {path} with {len(diff)} changed option(s) (--force_resume):\n{lines}")
        return
    raise UserError(
        f"{path} belongs to a run with other settings; resuming it would mix the two:\n{lines}\n"
        f"  Start a new run with another --output_dir (or --auto_resume False), or add --force_resume True "
        f"to continue that run with the new values.")


def resume(args, checkpointer, model, optimizer=None, scaler=None, model_ema=None, data=None):
    """Restore from ``--resume`` or the newest checkpoint; returns ``(epoch, iteration, checkpoint)``.
    ``data``: the fingerprints of the annotation files now, which must be those it trained on."""
    path = checkpointer.find_resume(args.resume, args.auto_resume)
    if path is None:
        return 0, 0, None
    ckpt = load_on_all_ranks(path)
    # A linear/LoRA run's backbone is known by its hash: the same file at another path is the same run.
    check_same_run(path, ckpt, args, ignore=("finetune",) if same_backbone(ckpt, model) else ())
    if data is not None:
        check_same_data(path, ckpt.get("data"), data, getattr(args, "force_resume", False))
    if optimizer is not None and "optimizer" not in ckpt:
        why = (f"{path} holds the weights but no optimizer state (checkpoint-best.pth and exported files keep only "
               f"the weights): resuming from it restarts the optimizer's moments")
        if not getattr(args, "force_resume", False):
            raise UserError(f"{why}. Resume from a checkpoint-N.pth or checkpoint-latest.pth, start a new run with it "
                            f"as --finetune, or add --force_resume True to continue with a fresh optimizer")
        print(f"WARNING: {why} (--force_resume)")
    load_model_state(model, ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if model_ema is not None and "model_ema" in ckpt:
        load_model_state(model_ema.module, ckpt["model_ema"])
    epoch, iteration = resume_position(ckpt)
    where = f"epoch {epoch}" + (f", iteration {iteration}" if iteration else "")
    print(f"resumed from {path} (next: {where})")
    return epoch, iteration, ckpt

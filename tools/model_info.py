"""Model zoo checks: parameters and GMACs of the registered models; does a checkpoint fit a model?

Table mode (default): every registered model (or those matching --models patterns) at its default
input, 1 x 3 x 16 x 160 x 160 (fine-tuning models: 7 classes; pre-training models: a 90% tube
mask). MACs are torch's flop counter / 2, the paper's GMACs; the forward pass runs on the meta
device (shapes only, no arithmetic) where the model allows, else on the CPU.

Checkpoint mode (--checkpoint): the file (or transformers VideoMAE folder) is read as the tools
read it (transformers' keys mapped to the project's), the model comes from --model or the
checkpoint's args, and every tensor is sorted into matched, shape mismatch, missing (the model
has it, the file does not) and unexpected (the file has it, the model does not). For a
fine-tuning model the file goes through the same key mapping as fine-tuning
(``models.keymap.to_finetune_keys``: wrapper prefixes stripped, decoder dropped, ``encoder.``
removed), and the verdict of ``models.load_pretrained`` is shown. Exit status 0 when it loads,
1 when it does not, 2 on errors.

Examples:
  python -m tools.model_info
  python -m tools.model_info --models 'svfap_*' --csv zoo.csv
  python -m tools.model_info --checkpoint pretrain/checkpoint-99.pth --model svfap_base_patch16_160
  python -m tools.model_info --checkpoint dfew/checkpoint-99.pth --verbose
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import sys
from collections import OrderedDict

import numpy as np
import pandas as pd
import torch
from timm.models import clean_state_dict

import models
from datasets.masking import TubeMaskGenerator
from engine.cli import HelpFormatter, UserError, run_entry
from engine.options import add_model_options, typed_options
from models import CheckpointMismatchError, checkpoint_args, compare_state_dicts, load_pretrained, read_checkpoint
from models.factory import config_kwargs, create_model, pretrain_name
from models.from_checkpoint import checkpoint_config, guess_model
from models.keymap import is_pretrain_state, project_state, to_finetune_keys


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="name patterns (fnmatch), default: all registered")
    p.add_argument("--mask_ratio", type=float, default=0.9, help="tube mask of the pre-training models")
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    p.add_argument("--checkpoint", default=None, help="check this file against --model instead")
    p.add_argument("--verbose", action="store_true", help="list every tensor in checkpoint mode")
    # Checkpoint mode: these override the checkpoint's args (checking a file against another model is
    # the point); table mode reads --num_frames and --input_size only.
    add_model_options(p)
    return p


# -- table --------------------------------------------------------------------------------------

def _inputs(model, num_frames, size, mask_ratio, device):
    x = torch.zeros(1, 3, num_frames, size, size, device=device)
    if not hasattr(model, "encoder"):
        return (x,)
    t, h, w = model.encoder.grid_size
    # The mask stays on the CPU: the model reads its token count, which a meta tensor does not have.
    mask = torch.from_numpy(TubeMaskGenerator((t, h, w), mask_ratio)(np.random.default_rng(0)))
    return x, mask[None]


def model_stats(name, num_frames=16, input_size=160, mask_ratio=0.9):
    """``{'model', 'params_M', 'GMACs', 'input', 'counted_on'}`` for one registered model."""
    kw = dict(img_size=input_size, num_frames=num_frames)
    model = create_model(name, **kw).eval()
    params = models.count_params(model)
    try:
        meta = model.to("meta")
        macs = models.count_macs(meta, *_inputs(meta, num_frames, input_size, mask_ratio, "meta"))
        where = "meta"
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: count on real tensors
        model = create_model(name, **kw).eval()
        macs = models.count_macs(model, *_inputs(model, num_frames, input_size, mask_ratio, "cpu"))
        where = "cpu"
    shape = f"1x3x{num_frames}x{input_size}x{input_size}" + (f", mask {mask_ratio:g}" if name.startswith("pretrain_")
                                                               else "")
    return {"model": name, "params_M": round(params / 1e6, 2), "GMACs": round(macs / 1e9, 2), "input": shape,
            "counted_on": where}


def zoo_table(patterns=None, **kw):
    names = models.MODEL_NAMES
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not names:
            raise UserError(f"no registered model matches {patterns}; registered: {', '.join(models.MODEL_NAMES)}")
    return pd.DataFrame([model_stats(n, **kw) for n in names])


# -- checkpoint check ---------------------------------------------------------------------------

def _groups(keys):
    """Counts per top-level module (``blocks.3.attn.qkv.weight`` → ``blocks``), in first-seen order."""
    out = OrderedDict()
    for k in keys:
        head = k.split(".")[0] if "." in k else k
        out[head] = out.get(head, 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in out.items())


def check_checkpoint(path, cli):
    """Compare a checkpoint with a model; returns ``(report dict, ok)``."""
    ckpt = read_checkpoint(path)
    state = project_state(ckpt)
    cfg, _ = checkpoint_config(checkpoint_args(ckpt), typed_options(cli), force=True)
    pretrain_file = is_pretrain_state(state)
    name = cfg.get("model") or guess_model(state)
    if pretrain_file and not cfg.get("model"):
        name = pretrain_name(name)
    report = {"checkpoint": path, "model": name, "file_kind": "pre-training" if pretrain_file else "fine-tuning",
              "file_tensors": len(state), "config": {k: v for k, v in cfg.items() if v is not None}}
    if name.startswith("pretrain_"):
        model = create_model(name, **config_kwargs(cfg, pretrain=True))
        diff = compare_state_dicts(model.state_dict(), clean_state_dict(state))
        report.update(diff, dropped=[])
        ok = not (diff["mismatched"] or diff["missing"] or diff["unexpected"])
        report["verdict"] = "loads (strict)" if ok else "does not load"
        return report, ok
    mapped = to_finetune_keys(state)
    head = mapped.get("head.weight")
    model = create_model(name, num_classes=int(head.shape[0]) if head is not None else int(cfg.get("nb_classes") or 7),
                         **config_kwargs(cfg))
    diff = compare_state_dicts(model.state_dict(), mapped)
    report.update(diff, dropped=[k for k in state if not to_finetune_keys({k: state[k]})])
    try:
        load_pretrained(copy.deepcopy(model), state, verbose=False)
        ok = True
        new = [k for k in diff["missing"] if k.startswith(("head.", "fc_norm."))]
        report["verdict"] = "loads with models.load_pretrained" + (f" (new, to train: {', '.join(new)})" if new else "")
    except CheckpointMismatchError as e:
        ok = False
        report["verdict"] = "does not load: " + str(e).splitlines()[1].strip()
    return report, ok


def format_check(report, verbose=False):
    lines = [f"checkpoint {report['checkpoint']} ({report['file_kind']}, {report['file_tensors']} tensors) "
             f"against {report['model']}"]
    cfg = report["config"]
    lines.append("  config: " + ", ".join(f"{k}={cfg[k]}" for k in ("input_size", "num_frames", "stage_depths",
                                                                     "embed_dim", "data_set", "nb_classes")
                                           if k in cfg))
    labels = [("matched", "match (name and shape)"), ("mismatched", "differ in shape"),
              ("missing", "missing from the file"), ("unexpected", "unexpected (in the file, not in the model)"),
              ("dropped", "dropped by the fine-tuning key mapping")]
    for key, text in labels:
        items = report.get(key) or []
        if not items and key in ("dropped",):
            continue
        if key == "mismatched":
            detail = "".join(f"\n      {m}" for m in items[:20]) + ("\n      ..." if len(items) > 20 else "")
        else:
            detail = ("".join(f"\n      {k}" for k in items) if verbose else
                      (f": {_groups(items)}" if items else ""))
        lines.append(f"  {len(items):4d} {text}{detail}")
    lines.append(f"  verdict: {report['verdict']}")
    return "\n".join(lines)


def run(argv=None):
    args = get_parser().parse_args(argv)
    if args.checkpoint:
        report, ok = check_checkpoint(args.checkpoint, args)
        print(format_check(report, args.verbose))
        return 0 if ok else 1
    table = zoo_table(args.models, num_frames=args.num_frames or 16, input_size=args.input_size or 160,
                      mask_ratio=args.mask_ratio)
    print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def main(argv=None):
    """Exit status: 0 listed, or the checkpoint loads; 1 it does not load; 2 a usage or checkpoint error
    (message on stderr)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

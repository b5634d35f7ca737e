"""Write a LoRA (or linear-probe) checkpoint of run_finetune.py --tuning lora|linear as a plain
fine-tuned checkpoint: the adapters merged into their layers (W + alpha/rank * B A, peft's merge),
the backbone's other weights and the trained head, under the usual keys. The result loads like
any fully fine-tuned checkpoint (run_finetune.py --eval, tools.predict, tools.export, --finetune of
a new run) and no longer needs the backbone file.

The backbone file is found at the path the checkpoint records, or at --backbone if it moved; its
sha256 must be the recorded one.

Examples:
  python -m tools.merge_lora out/dfew_lora/checkpoint-99.pth --out out/dfew_lora/merged.pth
  python -m tools.merge_lora adapter.pth --out merged.pth --backbone /new/place/checkpoint-99.pth
"""
from __future__ import annotations

import argparse
import os
import sys

from engine.checkpoint import save_checkpoint
from engine.cli import HelpFormatter, UserError, run_entry
from models import load_checkpoint_file, model_from_checkpoint
from models.tuning import is_tuned_checkpoint, merge_tuning


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="a --tuning lora (or linear) checkpoint of run_finetune.py")
    p.add_argument("--out", required=True, help="the plain checkpoint to write")
    p.add_argument("--backbone", default=None, help="the backbone file, if it moved from the recorded path")
    return p


def merged_state(path, backbone=None):
    """The plain checkpoint dict of the tuned checkpoint at ``path``."""
    checkpoint = load_checkpoint_file(path)
    if not is_tuned_checkpoint(checkpoint):
        raise UserError(f"{path} is not a linear/LoRA checkpoint: it loads as it is, there is nothing to merge")
    model, _ = model_from_checkpoint(checkpoint, backbone=backbone, kind="classifier")
    used = model.tuning_backbone  # the recorded reference, at the path where the file was found
    merge_tuning(model)
    return {"model": model.state_dict(), "epoch": checkpoint.get("epoch"), "args": checkpoint.get("args", {}),
            "merged_from": {"checkpoint": os.path.abspath(path), "tuning": checkpoint["tuning"], "backbone": used}}


def run(argv=None):
    args = get_parser().parse_args(argv)
    if os.path.abspath(args.out) == os.path.abspath(args.checkpoint):
        raise UserError("--out must not be the checkpoint itself")
    state = merged_state(args.checkpoint, args.backbone)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_checkpoint(args.out, state)
    mode = state["merged_from"]["tuning"]["mode"]
    print(f"wrote {args.out}: the {mode} checkpoint {args.checkpoint} over {state['merged_from']['backbone']['path']} "
          f"as a plain model ({len(state['model'])} tensors)")
    return 0


def main(argv=None):
    """Exit status: 0 written, 2 a usage or checkpoint error (message on stderr)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

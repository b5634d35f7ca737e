"""Export a fine-tuned checkpoint to ONNX, for running the model without this repository or PyTorch
(onnxruntime, TensorRT, OpenVINO, ...). tools/onnx_predict.py runs the result with onnxruntime, numpy
and PyAV alone.

The graph takes ``clip``: float32 ``(batch, 3, num_frames, input_size, input_size)``, any batch size,
the clip shape the checkpoint records; it returns ``logits`` ``(batch, classes)`` (softmax gives the
probabilities), or ``outputs`` ``(batch, targets)`` for regression. What a caller needs to build a
clip is in the model's metadata (``metadata_props``): ``class_names`` (JSON), ``task``,
``num_frames``, ``sampling_rate``, ``input_size``, ``short_side_size``, ``frame_resize``, ``mean`` and ``std`` (JSON),
and ``preprocessing``, the steps in words. LoRA and linear-probe checkpoints are merged into a plain
model first (their backbone file must be at its recorded path, or at --backbone).

PyTorch's dynamo-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``) writes the graph;
``--verify`` (the default) runs it in onnxruntime on a random batch and prints the largest
difference from PyTorch.

Examples:
  python -m tools.export out/dfew_fold1/checkpoint-99.pth --format onnx
  python -m tools.export ckpt.pth --format onnx --out model.onnx --class_names classes.txt
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from datasets.registry import output_names, sampling_rate_of
from engine.cli import HelpFormatter, UserError, run_entry
from engine.options import add_model_options, typed_options
from models import model_from_checkpoint
from models.tuning import merge_tuning

FORMATS = ("onnx",)
OPSET = 18


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="fine-tuned checkpoint (run_finetune.py output; LoRA/linear ones too)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="export format")
    p.add_argument("--out", default=None, help="output file (default: the checkpoint's path with .onnx)")
    p.add_argument("--class_names", default=None, help="comma-separated names, or a file with one per line")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    p.add_argument("--verify", type=lambda v: str(v).lower() not in ("0", "false", "no"), default=True,
                   help="compare onnxruntime with PyTorch on a random batch after writing (True/False)")
    add_model_options(p)
    return p


def export_metadata(model, cfg, names, task):
    """The facts a caller needs to build the model's input, as ONNX metadata (strings)."""
    num_frames, size = model.patch_embed.num_frames, model.patch_embed.img_size[0]
    rate = sampling_rate_of(cfg)
    short = cfg.get("short_side_size") or size
    resize = cfg.get("frame_resize") or "square"
    resized = (f"each frame resized to {short}x{short} (bilinear, antialiased; a squash when it is not square)"
               if resize == "square" else f"each frame's short side resized to {short} (bilinear, antialiased)")
    meta = {
        "class_names": json.dumps(names), "task": task, "model": str(cfg.get("model")),
        "data_set": str(cfg.get("data_set") or ""), "num_frames": str(num_frames), "sampling_rate": str(rate),
        "input_size": str(size), "short_side_size": str(short), "frame_resize": resize,
        "mean": json.dumps(list(IMAGENET_DEFAULT_MEAN)),
        "std": json.dumps(list(IMAGENET_DEFAULT_STD)), "input_layout": "NCTHW",
        "preprocessing": (f"RGB frames of a face video, {num_frames} of them {rate} frames apart; {resized}, "
                          f"the centre {size}x{size} cropped; "
                          f"values / 255, then (x - mean) / std per channel; stacked as (3, {num_frames}, {size}, "
                          f"{size}) per clip"),
        "output": ("outputs (batch, targets)" if task == "regression"
                   else "logits (batch, classes): softmax gives the class probabilities"),
    }
    if getattr(model, "keep_temporal_dim", False):
        meta["output"] += f"; one set per input frame, flattened frame-major ({num_frames} x outputs)"
    return meta


def export_onnx(model, path, metadata, opset=OPSET, output_name="logits"):
    """Write ``model`` (eval mode) as ONNX with a dynamic batch and ``metadata``; returns the example input."""
    embed = model.patch_embed
    example = torch.randn(2, 3, embed.num_frames, *embed.img_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["clip"],
                                    output_names=[output_name], dynamic_shapes={"x": {0: batch}},
                                    opset_version=opset, verbose=False)
    program.model.metadata_props.update(metadata)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path)
    return example


def max_difference(model, path, batch_sizes=(1, 3), seed=0):
    """Largest absolute difference between onnxruntime and PyTorch on random batches of these sizes."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    embed = model.patch_embed
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, embed.num_frames, *embed.img_size, generator=generator)
        with torch.no_grad():
            ref = model(x).numpy()
        (out,) = session.run(None, {"clip": x.numpy()})
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def run(argv=None):
    args = get_parser().parse_args(argv)
    out = args.out or os.path.splitext(args.checkpoint)[0] + ".onnx"
    if os.path.abspath(out) == os.path.abspath(args.checkpoint):
        raise UserError("--out must not be the checkpoint itself")
    model, cfg = model_from_checkpoint(args.checkpoint, typed_options(args), args.force_config, kind="classifier")
    merge_tuning(model)  # LoRA weights merged, linear probes made plain: one ordinary graph
    task, names = output_names(model.num_classes, cfg.get("data_set"), cfg.get("task"), cfg.get("nb_classes"),
                               cfg.get("num_targets"), args.class_names, recorded=cfg.get("class_names"))
    metadata = export_metadata(model, cfg, names, task)
    export_onnx(model, out, metadata, args.opset, "outputs" if task == "regression" else "logits")
    listed = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    print(f"wrote {out}: {cfg.get('model')}, clips of {metadata['num_frames']} frames every "
          f"{metadata['sampling_rate']} at {metadata['input_size']}px, {len(names)} "
          f"{'targets' if task == 'regression' else 'classes'} ({listed})")
    if args.verify:
        worst = max_difference(model, out)
        print(f"onnxruntime vs PyTorch on random batches of 1 and 3: max abs difference {worst:.2e}")
    return 0


def main(argv=None):
    """Exit status: 0 written, 2 a usage or checkpoint error (message on stderr)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

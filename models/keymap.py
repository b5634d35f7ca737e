"""The models' key mapping (timm's ``checkpoint_filter_fn``): any checkpoint the project reads,
the release's, this project's, the original VideoMAE's or transformers', onto a fine-tuning
model's state dict, with a report of what was loaded, resized or left new.

Any mismatch beyond a new classifier raises: a checkpoint of another width (a 768-wide file given
to the 512-wide model) must not leave the model at its random initialisation (docs/differences.md).
"""
import logging
import math
import os
from collections import OrderedDict

import torch.nn.functional as F
from timm.models import clean_state_dict

from . import videomae
from ._helpers import DEFAULT_MODEL_KEY, CheckpointMismatchError, WeightsMismatchError, check_strict, \
    checkpoint_args, extract_state_dict, is_path, load_checkpoint_file
from .tuning import is_tuned_checkpoint

_logger = logging.getLogger(__name__)

PRETRAIN_ONLY = ("decoder.", "mask_token", "encoder_to_decoder.", "pos_embed_decoder")
NEW_HEAD_OK = ("head.", "fc_norm.")


class TunedCheckpointError(CheckpointMismatchError):
    """A linear/LoRA checkpoint (only the trained part, ``mode``, over the ``backbone`` file)
    given where a whole model's weights are needed."""
    advice = "tuned_checkpoint"

    def __init__(self, mode, backbone):
        self.mode, self.backbone = mode, backbone
        super().__init__(f"this is a {mode} checkpoint: it holds only the trained part, over the backbone {backbone}")


def read_checkpoint(path):
    """A checkpoint as every entry point and tool reads it: a PyTorch file or a transformers
    ``save_pretrained`` folder of a VideoMAE."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return videomae.read_folder(path)
    return load_checkpoint_file(path)


def project_state(checkpoint, model_key=DEFAULT_MODEL_KEY):
    """The weights of a checkpoint in the project's layout: transformers' VideoMAE keys are mapped
    (models/videomae.py); the release's, the original VideoMAE's and this project's are kept."""
    state = extract_state_dict(checkpoint, model_key)
    return videomae.from_transformers(state) if videomae.is_transformers_state(state) else state


def is_pretrain_state(state_dict):
    """Whether the weights are a masked autoencoder's (they have its decoder)."""
    return any(k.startswith(PRETRAIN_ONLY) for k in clean_state_dict(state_dict))


def to_finetune_keys(state_dict, keep_norm=False):
    """Strip wrapper prefixes (DDP, torch.compile, ``backbone.``) and drop everything only the
    pre-training model has. The encoder's final ``norm`` feeds the decoder; with ``keep_norm`` it
    becomes the fine-tuning model's ``norm`` (a model without mean pooling reads the first token
    through it; the release loads it there)."""
    out = OrderedDict()
    for key, value in clean_state_dict(state_dict).items():
        key = key[len("backbone."):] if key.startswith("backbone.") else key
        if key.startswith(PRETRAIN_ONLY):
            continue
        if key.startswith("encoder."):
            key = key[len("encoder."):]
            if key.startswith("head.") or (key.startswith("norm.") and not keep_norm):
                continue
        out[key] = value
    return out


def _grid_guesses(num_tokens, grid, hints):
    t, h, w = grid
    guesses = []
    if hints:
        guesses.append(hints)
    if num_tokens % (h * w) == 0:
        guesses.append((num_tokens // (h * w), h, w))
    side = math.isqrt(num_tokens // t) if num_tokens % t == 0 else 0
    if side and t * side * side == num_tokens:
        guesses.append((t, side, side))
    return [g for g in guesses if math.prod(g) == num_tokens]


def interpolate_pos_embed(table, grid, source_grid=None):
    """Resize a learnable ``(1, N, C)`` position table to ``grid`` (frames and/or resolution)."""
    guesses = _grid_guesses(table.shape[1], grid, source_grid)
    if not guesses:
        raise CheckpointMismatchError(f"cannot tell the token grid of a {table.shape[1]}-position table",
                                      positions=table.shape[1])
    src = guesses[0]
    x = table.reshape(1, *src, -1).permute(0, 4, 1, 2, 3).float()
    x = F.interpolate(x, size=tuple(grid), mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).flatten(1, 3).to(table.dtype)


def _source_grid(args, patch_size, tubelet_size):
    frames, size = args.get("num_frames"), args.get("input_size")
    if frames and size:
        return (frames // args.get("tubelet_size", tubelet_size), size // patch_size, size // patch_size)
    return None


def load_pretrained(model, checkpoint, model_key=DEFAULT_MODEL_KEY, verbose=True):
    """Load a pre-training or fine-tuning checkpoint (the release's, this project's, VideoMAE's
    original or transformers' format) into a fine-tuning model.

    ``checkpoint`` is a path (file or transformers folder), a loaded checkpoint dict or a state
    dict. Returns a report dict. Raises :class:`WeightsMismatchError` on a shape mismatch (other
    than a new classifier) or when weights the model needs are missing (other than ``head`` and
    ``fc_norm``); the model is then unchanged.
    """
    state_dict, report = map_pretrained(model, checkpoint, model_key)
    model.load_state_dict(state_dict, strict=False)
    if verbose:
        print(format_report(report))
    return report


def map_pretrained(model, checkpoint, model_key=DEFAULT_MODEL_KEY):
    """``(state_dict, report)``: the checkpoint's weights that :func:`load_pretrained` puts into
    ``model``, checked as it checks them (nothing is loaded)."""
    if is_path(checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    if is_tuned_checkpoint(checkpoint):
        raise TunedCheckpointError(checkpoint["tuning"].get("mode"), checkpoint["backbone"].get("path"))
    args = checkpoint_args(checkpoint)
    own = model.state_dict()
    state_dict = to_finetune_keys(project_state(checkpoint, model_key), keep_norm="norm.weight" in own)
    report = {"loaded": [], "missing": [], "unused": [], "new_head": [], "interpolated": [], "mismatched": [],
              "regridded": []}

    for key in list(state_dict):
        if key not in own:
            report["unused"].append(key)
            state_dict.pop(key)
            continue
        src, dst = state_dict[key].shape, own[key].shape
        if src == dst:
            continue
        if key == "pos_embed" and src[-1] == dst[-1]:
            patch = model.patch_embed.proj.kernel_size
            state_dict[key] = interpolate_pos_embed(state_dict[key], model.grid_size,
                                                    _source_grid(args, patch[1], patch[0]))
            report["interpolated"].append(f"{key}: {tuple(src)} -> {tuple(dst)}")
        elif key.startswith("head."):
            report["new_head"].append(f"{key}: checkpoint {tuple(src)}, model {tuple(dst)}")
            state_dict.pop(key)
        else:
            report["mismatched"].append(f"{key}: checkpoint {tuple(src)}, model {tuple(dst)}")
    report["missing"] = [k for k in own if k not in state_dict and not k.startswith(NEW_HEAD_OK)]
    report["new_head"] += [k for k in own if k not in state_dict and k.startswith(NEW_HEAD_OK)
                           and not any(r.startswith(k) for r in report["new_head"])]

    if report["mismatched"] or report["missing"]:
        src = state_dict.get("patch_embed.proj.weight")
        dst = own.get("patch_embed.proj.weight")
        widths = (src.shape[0], dst.shape[0]) if src is not None and dst is not None and src.shape[0] != dst.shape[0] \
            else None
        matched = len(state_dict) - len(report["mismatched"])
        raise WeightsMismatchError("checkpoint", matched, report["mismatched"], report["missing"], report["unused"],
                                   widths)
    report["loaded"] = list(state_dict)
    report["regridded"] = _regridded(model, args, own)
    return state_dict, report


def _regridded(model, args, own):
    """A note when the checkpoint's token grid differs from the model's and the positions are the
    fixed sinusoid table (not stored): the model's own table is used, as VideoMAE's fine-tuning does."""
    tubelet, _, patch = model.patch_embed.proj.kernel_size
    source = _source_grid(args, patch, tubelet)
    if "pos_embed" in own or source is None or tuple(source) == tuple(model.grid_size):
        return []
    return [f"token grid {'x'.join(map(str, source))} in the checkpoint, "
            f"{'x'.join(map(str, model.grid_size))} in the model (fixed sinusoid positions of the model's grid)"]


def format_report(report):
    parts = [f"loaded {len(report['loaded'])} tensors"]
    if report["new_head"]:
        parts.append("new (trained from scratch): " + ", ".join(report["new_head"]))
    if report["interpolated"]:
        parts.append("interpolated: " + ", ".join(report["interpolated"]))
    if report.get("regridded"):
        parts.append("; ".join(report["regridded"]))
    if report["unused"]:
        parts.append(f"unused checkpoint tensors ({len(report['unused'])}): " + ", ".join(report["unused"][:8])
                     + (" ..." if len(report["unused"]) > 8 else ""))
    return "; ".join(parts)


def checkpoint_filter_fn(checkpoint, model):
    """timm's ``pretrained_filter_fn`` for our models: a checkpoint (dict, any layout the project
    reads) → ``model``'s complete state dict.

    Fine-tuning models go through :func:`map_pretrained` (a new head where the classes differ, a
    :class:`WeightsMismatchError` on anything else that does not fit); pre-training models take
    their own checkpoints only, strictly.
    """
    if is_pretrain_state(model.state_dict()):
        return check_strict(model, project_state(checkpoint), "pre-training checkpoint")
    state_dict, report = map_pretrained(model, checkpoint)
    _logger.info(format_report(report))
    return {**model.state_dict(), **state_dict}

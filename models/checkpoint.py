"""Reading release checkpoints and mapping them onto our models, failing loudly on mismatches.

The release's loader only printed size mismatches, so a 768-wide pre-training checkpoint silently
gave a randomly initialised 512-wide model. Here any mismatch beyond a new classifier raises.
"""
import argparse
import logging
import math
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

# What the release's checkpoints pickle besides tensors: argparse.Namespace, and numpy scalars
# in some ``args`` values. Old pickles name numpy's scalar under ``numpy.core``.
_SAFE_GLOBALS = [
    argparse.Namespace,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np._core.multiarray.scalar,
    np.dtype,
    (np.dtype, "numpy.dtype"),
    type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64)), type(np.dtype(np.bool_)),
]

_logger = logging.getLogger(__name__)

PRETRAIN_ONLY = ("decoder.", "mask_token", "encoder_to_decoder.", "pos_embed_decoder")
NEW_HEAD_OK = ("head.", "fc_norm.")


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model (shapes, or weights the model needs are absent)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file that is missing, cut short or not a PyTorch checkpoint."""


def load_checkpoint_file(path, map_location="cpu", mmap=False):
    """``torch.load`` with ``weights_only=True`` and only the release's extra globals allowed.

    Any failure to read the file becomes a :class:`CheckpointReadError` naming the file;
    ``mmap=True`` maps the tensors instead of reading them (cheap when only metadata is needed).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointReadError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types for foreign or cut files (KeyError, RuntimeError, ...)
        raise CheckpointReadError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                                  f"({_reason(e)})") from e


def read_checkpoint(path):
    """A checkpoint as every entry point and tool reads it: a PyTorch file
    (:func:`load_checkpoint_file`) or a transformers ``save_pretrained`` folder of a VideoMAE
    (``models.videomae.read_folder``)."""
    from . import videomae
    path = os.fspath(path)
    if os.path.isdir(path):
        return videomae.read_folder(path)
    return load_checkpoint_file(path)


def _is_path(checkpoint):
    return isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, "__fspath__")


def _reason(err):
    text = str(err)
    if "WeightsUnpickler error:" in text:  # skip torch's boilerplate about weights_only
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def extract_state_dict(checkpoint, model_key="model|module|state_dict"):
    """The weights inside a checkpoint (first of ``model_key``'s keys), or the checkpoint itself."""
    if isinstance(checkpoint, dict):
        for key in model_key.split("|"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
        if all(torch.is_tensor(v) for v in checkpoint.values()):
            return checkpoint
    raise CheckpointMismatchError(
        f"no state dict under any of {model_key.split('|')} (top-level keys: {sorted(checkpoint)[:10]})")


def project_state(checkpoint, model_key="model|module|state_dict"):
    """The weights of a checkpoint in the project's layout: transformers' VideoMAE keys are mapped
    (``models.videomae``); the release's, the original VideoMAE's and this project's are kept."""
    from . import videomae
    state = extract_state_dict(checkpoint, model_key)
    return videomae.from_transformers(state) if videomae.is_transformers_state(state) else state


def checkpoint_args(checkpoint):
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    return dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))


# -- key mapping and comparison ------------------------------------------------------------------

WRAPPERS = ("module.", "_orig_mod.")  # DDP and torch.compile


def strip_wrappers(state_dict, prefixes=WRAPPERS):
    out = OrderedDict()
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def is_pretrain_state(state_dict):
    """Whether the weights are a masked autoencoder's (they have its decoder)."""
    return any(k.startswith(PRETRAIN_ONLY) for k in strip_wrappers(state_dict))


def compare_state_dicts(own, theirs):
    """Which keys match (name and shape), differ in shape, are missing from ``theirs`` or unexpected."""
    out = {"matched": [], "mismatched": [], "missing": [], "unexpected": []}
    for key, value in own.items():
        if key not in theirs:
            out["missing"].append(key)
        elif tuple(theirs[key].shape) != tuple(value.shape):
            out["mismatched"].append(f"{key}: checkpoint {tuple(theirs[key].shape)}, model {tuple(value.shape)}")
        else:
            out["matched"].append(key)
    out["unexpected"] = [k for k in theirs if k not in own]
    return out


def check_strict(model, state_dict, what="checkpoint"):
    """The weights (wrapper prefixes stripped) when they fit ``model`` exactly, name for name and
    shape for shape; otherwise a :class:`CheckpointMismatchError` explaining it in a few lines."""
    state_dict = strip_wrappers(state_dict)
    diff = compare_state_dicts(model.state_dict(), state_dict)
    if diff["mismatched"] or diff["missing"] or diff["unexpected"]:
        lines = [f"{what} does not fit the model ({len(diff['matched'])} tensors match):"]
        for kind in ("mismatched", "missing", "unexpected"):
            if diff[kind]:
                lines.append(f"  {len(diff[kind])} {kind}, e.g. " + "; ".join(diff[kind][:4]))
        lines.append("  pick the matching --model / --input_size / --num_frames / --stage_depths, "
                     "or check the file with `python -m tools.model_info --checkpoint`")
        raise CheckpointMismatchError("\n".join(lines))
    return state_dict


def load_strict(model, state_dict, what="checkpoint"):
    """``load_state_dict(strict=True)`` that explains a mismatch in a few lines, not a wall of keys."""
    model.load_state_dict(check_strict(model, state_dict, what))
    return model


# -- the configuration a checkpoint records ----------------------------------------------------------

# What a checkpoint's ``args`` say about its model, its clips and its outputs: using it with other
# values gives other numbers without any error.
MODEL_KEYS = ("model", "input_size", "num_frames", "tubelet_size", "stage_depths", "num_bottleneck_tokens",
              "temporal_kernel_size", "embed_dim", "num_heads", "use_mean_pooling", "keep_temporal_dim",
              "decoder_depth", "decoder_embed_dim", "decoder_num_heads")
CLIP_KEYS = ("sampling_rate", "short_side_size", "frame_resize")
OUTPUT_KEYS = ("data_set", "nb_classes", "task", "num_targets", "class_names")


def _same(key, a, b):
    if key == "model":
        from .factory import finetune_name
        return finetune_name(a) == finetune_name(b)
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def checkpoint_config(recorded, given, force=False, keys=MODEL_KEYS + CLIP_KEYS + OUTPUT_KEYS):
    """``(config, adopted)`` for ``keys``: what the checkpoint ``recorded``, except where the user
    ``given`` a value (``{key: value}`` of what was typed).

    A typed value that disagrees with the checkpoint is a :class:`CheckpointMismatchError` listing
    each one, unless ``force`` (the typed value then wins). ``adopted`` is what came from the
    checkpoint alone. A model name that is not one of ours (the release's or VideoMAE's own, e.g. timm's
    ``vit_base_patch16_224``) is ignored (``--model`` decides).
    """
    from .factory import MODEL_NAMES, finetune_name
    config, adopted, conflicts = {}, {}, []
    for key in keys:
        value, mine = recorded.get(key), given.get(key)
        # Not timm.is_model: VideoMAE's files name timm's own vit_base_patch16_224.
        if key == "model" and value is not None and finetune_name(value) not in MODEL_NAMES:
            value = None
        if value is None or mine is None:
            if value is not None:
                adopted[key] = value
            if mine is not None or value is not None:
                config[key] = mine if mine is not None else value
        elif _same(key, value, mine) or force:
            config[key] = mine
        else:
            conflicts.append(f"--{key} {mine} (the checkpoint records {value})")
    if conflicts:
        raise CheckpointMismatchError(
            "options that disagree with the checkpoint: " + "; ".join(conflicts)
            + ". Drop them (the checkpoint's values are used), or add --force_config to use yours anyway")
    return config, adopted


def to_finetune_keys(state_dict):
    """Strip wrapper prefixes and drop everything only the pre-training model has."""
    out = OrderedDict()
    for key, value in strip_wrappers(state_dict, WRAPPERS + ("backbone.",)).items():
        if key.startswith(PRETRAIN_ONLY):
            continue
        if key.startswith("encoder."):
            key = key[len("encoder."):]
            if key.startswith(("norm.", "head.")):  # encoder.norm feeds the decoder only
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
        raise CheckpointMismatchError(f"cannot tell the token grid of a {table.shape[1]}-position table")
    src = guesses[0]
    x = table.reshape(1, *src, -1).permute(0, 4, 1, 2, 3).float()
    x = F.interpolate(x, size=tuple(grid), mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).flatten(1, 3).to(table.dtype)


def _source_grid(args, patch_size, tubelet_size):
    frames, size = args.get("num_frames"), args.get("input_size")
    if frames and size:
        return (frames // args.get("tubelet_size", tubelet_size), size // patch_size, size // patch_size)
    return None


def load_pretrained(model, checkpoint, model_key="model|module|state_dict", verbose=True):
    """Load a pre-training or fine-tuning checkpoint (the release's, this project's, VideoMAE's
    original or transformers' format) into a fine-tuning model.

    ``checkpoint`` is a path (file or transformers folder), a loaded checkpoint dict or a state
    dict. Returns a report dict. Raises :class:`CheckpointMismatchError` on a shape mismatch (other
    than a new classifier) or when weights the model needs are missing (other than ``head`` and
    ``fc_norm``); the model is then unchanged.
    """
    state_dict, report = map_pretrained(model, checkpoint, model_key)
    model.load_state_dict(state_dict, strict=False)
    if verbose:
        print(format_report(report))
    return report


def map_pretrained(model, checkpoint, model_key="model|module|state_dict"):
    """``(state_dict, report)``: the checkpoint's weights that :func:`load_pretrained` puts into
    ``model``, checked as it checks them (nothing is loaded)."""
    if _is_path(checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    _refuse_tuned(checkpoint)
    args = checkpoint_args(checkpoint)
    state_dict = to_finetune_keys(project_state(checkpoint, model_key))
    own = model.state_dict()
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
        raise CheckpointMismatchError(_explain(report, state_dict, own))
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


def _refuse_tuned(checkpoint):
    from .tuning import is_tuned_checkpoint
    if is_tuned_checkpoint(checkpoint):
        raise CheckpointMismatchError(
            f"this is a {checkpoint['tuning'].get('mode')} checkpoint: it holds only the trained part, over the "
            f"backbone {checkpoint['backbone'].get('path')}. Evaluate it with --eval, continue it with --resume, or "
            f"write it as a plain checkpoint first: python -m tools.merge_lora CHECKPOINT --out FILE")


def _explain(report, state_dict, own):
    lines = ["checkpoint does not fit the model:"]
    src = state_dict.get("patch_embed.proj.weight")
    dst = own.get("patch_embed.proj.weight")
    if src is not None and dst is not None and src.shape[0] != dst.shape[0]:
        lines.append(f"  the checkpoint is {src.shape[0]} wide but the model is {dst.shape[0]} wide "
                     f"(embed_dim); pick the matching --model")
    if report["mismatched"]:
        lines.append(f"  {len(report['mismatched'])} shape mismatches, e.g.:")
        lines += ["    " + m for m in report["mismatched"][:8]]
    if report["missing"]:
        lines.append(f"  {len(report['missing'])} weights missing from the checkpoint, e.g.:")
        lines += ["    " + m for m in report["missing"][:8]]
    if report["unused"]:
        lines.append(f"  {len(report['unused'])} checkpoint weights the model has no place for, e.g. "
                     + ", ".join(report["unused"][:5]))
    return "\n".join(lines)


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


# -- a model as its checkpoint records it ----------------------------------------------------------

def model_from_checkpoint(checkpoint, given=None, force=False, kind="any", backbone=None):
    """``(model, config)``: the model a checkpoint file (or loaded dict) records, loaded strictly
    (``config["model"]`` is the name built).

    ``kind``: ``classifier`` (a fine-tuned model with its trained head), ``pretrain`` (the masked
    autoencoder with its decoder), or ``any`` (what the file holds). ``given`` and ``force`` as in
    :func:`checkpoint_config`. A linear/LoRA checkpoint (models/tuning.py) is completed from its
    backbone file, found where ``backbone`` (or ``given["backbone"]``, a tool's --backbone) says
    or at its recorded path. The model is in eval mode.
    """
    from .factory import config_kwargs, create_model, finetune_name, pretrain_name
    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint(checkpoint)
    state = strip_wrappers(project_state(checkpoint))
    config, _ = checkpoint_config(checkpoint_args(checkpoint), given or {}, force)
    name = config.get("model") or guess_model(state)
    if is_pretrain_state(state):
        if kind == "classifier":
            raise CheckpointMismatchError("this is a pre-training checkpoint (it has a decoder and no classifier): "
                                          "predicting needs a fine-tuned one; for features use tools.extract_features")
        config["model"] = pretrain_name(name)
        model = create_model(config["model"], **config_kwargs(config, pretrain=True))
        return load_strict(model, state, f"pre-training checkpoint ({config['model']})").eval(), config
    if kind == "pretrain":
        raise CheckpointMismatchError("this checkpoint has no decoder (a fine-tuned model): give a pre-training one")
    state = to_finetune_keys(state)
    head = state.get("head.weight")
    if kind == "classifier" and head is None:
        raise CheckpointMismatchError("the checkpoint has no classifier weights (head.weight): it cannot predict")
    outputs = int(head.shape[0]) if head is not None else 0
    if kind == "classifier" and config.get("nb_classes") and int(config["nb_classes"]) != outputs:
        raise CheckpointMismatchError(f"--nb_classes / the checkpoint's args say {config['nb_classes']} outputs, "
                                      f"but its classifier has {outputs}")
    config["model"] = finetune_name(name)
    model = create_model(config["model"], num_classes=outputs, **config_kwargs(config))
    from .tuning import is_tuned_checkpoint, load_tuned
    if is_tuned_checkpoint(checkpoint):
        return load_tuned(model, checkpoint, backbone or (given or {}).get("backbone")).eval(), config
    return load_strict(model, state, f"checkpoint ({config['model']})").eval(), config


def guess_model(state_dict):
    """The fine-tuning model a state dict's structure points to when its ``args`` name none of
    ours (the original VideoMAE's files name timm-style ViTs): one plain stage is VideoMAE's ViT-B."""
    staged = any(".cross_attn." in k or "downsamples." in k for k in state_dict)
    return "svfap_base_patch16_160" if staged else "videomae_base_patch16_160"


# -- timm's pretrained loading ----------------------------------------------------------------------

def pretrained_filter(checkpoint, model):
    """timm's ``pretrained_filter_fn`` for our models: a checkpoint (dict, any layout the project
    reads) → ``model``'s complete state dict.

    Fine-tuning models go through :func:`map_pretrained` (a new head where the classes differ, a
    :class:`CheckpointMismatchError` on anything else that does not fit); pre-training models take
    their own checkpoints only, strictly.
    """
    if is_pretrain_state(model.state_dict()):
        return check_strict(model, project_state(checkpoint), "pre-training checkpoint")
    state_dict, report = map_pretrained(model, checkpoint)
    _logger.info(format_report(report))
    return {**model.state_dict(), **state_dict}


def load_for_timm(model, path):
    """timm's ``custom_load`` hook of our models (``model.load_pretrained(path)``): the file or
    transformers folder, read as the tools read it, through :func:`pretrained_filter`."""
    model.load_state_dict(pretrained_filter(read_checkpoint(path), model))

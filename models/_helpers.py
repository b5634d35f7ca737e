"""The bottom of models/ (timm's ``_helpers``): reading checkpoint files safely, the state-dict
utilities every loader shares, and the errors they raise. Imports nothing of the project.

Errors carry their facts as fields. Whether one is the user's to fix, and what to do about it in
command-line words, is said by the command line (engine/cli.py) from ``user_error`` and
``advice``, so the same error reads right in a notebook and in a tool.
"""
import argparse
import os

import numpy as np
import torch
from timm.models import clean_state_dict

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

DEFAULT_MODEL_KEY = "model|module|state_dict"


class CheckpointError(Exception):
    """A checkpoint that cannot be used as given: a mistake in what the caller passed, not a bug.

    ``advice``: a key (class attribute) naming what the user can do about it; the command line
    words it (engine/cli.py).
    """
    user_error = True
    advice = None

    def __reduce__(self):  # picklable whatever the constructor's arguments: ranks pass errors on
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls, args, facts):
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(facts)
    return err


class CheckpointReadError(CheckpointError):
    """A checkpoint that is missing, cut short or not a PyTorch checkpoint (``path``, ``reason``)."""

    def __init__(self, path, reason):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"checkpoint not found: {self.path}" if reason is None
                         else f"cannot read checkpoint {self.path}: {reason}")


class CheckpointMismatchError(CheckpointError):
    """The checkpoint does not fit the model or what it is used for; its fields (keyword
    arguments) say how."""

    def __init__(self, message, **facts):
        super().__init__(message)
        self.__dict__.update(facts)


class WeightsMismatchError(CheckpointMismatchError):
    """Weights that do not fit a model: ``what`` was loaded, ``matched`` tensors (a count) and
    the ``mismatched`` / ``missing`` / ``unexpected`` ones (lists); ``widths`` = (the
    checkpoint's, the model's) embedding width when they differ."""
    advice = "pick_model"

    def __init__(self, what, matched=0, mismatched=(), missing=(), unexpected=(), widths=None):
        self.what, self.matched, self.widths = what, matched, widths
        self.mismatched, self.missing, self.unexpected = list(mismatched), list(missing), list(unexpected)
        lines = [f"{what} does not fit the model ({matched} tensors match):"]
        if widths:
            lines.append(f"  the checkpoint is {widths[0]} wide but the model is {widths[1]} wide (embed_dim)")
        for kind in ("mismatched", "missing", "unexpected"):
            items = getattr(self, kind)
            if items:
                lines.append(f"  {len(items)} {kind}, e.g. " + "; ".join(items[:4]))
        super().__init__("\n".join(lines))


def load_checkpoint_file(path, map_location="cpu", mmap=False):
    """``torch.load`` with ``weights_only=True`` and only the release's extra globals allowed.

    Any failure to read the file becomes a :class:`CheckpointReadError` naming the file;
    ``mmap=True`` maps the tensors instead of reading them (cheap when only metadata is needed).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointReadError(path, None)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types for foreign or cut files (KeyError, RuntimeError, ...)
        raise CheckpointReadError(path, f"not a complete PyTorch checkpoint ({_reason(e)})") from e


def _reason(err):
    text = str(err)
    if "WeightsUnpickler error:" in text:  # skip torch's boilerplate about weights_only
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def is_path(checkpoint):
    return isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, "__fspath__")


def extract_state_dict(checkpoint, model_key=DEFAULT_MODEL_KEY):
    """The weights inside a checkpoint (first of ``model_key``'s keys), or the checkpoint itself."""
    if isinstance(checkpoint, dict):
        for key in model_key.split("|"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
        if all(torch.is_tensor(v) for v in checkpoint.values()):
            return checkpoint
    raise CheckpointMismatchError(
        f"no state dict under any of {model_key.split('|')} (top-level keys: {sorted(checkpoint)[:10]})",
        model_key=model_key)


def checkpoint_args(checkpoint):
    """The options a checkpoint records (``args``: a namespace in the release's files, a dict in ours)."""
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    return dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))


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
    """The weights (DDP / torch.compile prefixes stripped, in either wrap order) when they fit
    ``model`` exactly, name for name and shape for shape; else a :class:`WeightsMismatchError`."""
    state_dict = clean_state_dict(state_dict)
    diff = compare_state_dicts(model.state_dict(), state_dict)
    if diff["mismatched"] or diff["missing"] or diff["unexpected"]:
        raise WeightsMismatchError(what, len(diff["matched"]), diff["mismatched"], diff["missing"],
                                   diff["unexpected"])
    return state_dict


def load_strict(model, state_dict, what="checkpoint"):
    """``load_state_dict(strict=True)`` that explains a mismatch in a few lines, not a wall of keys."""
    model.load_state_dict(check_strict(model, state_dict, what))
    return model

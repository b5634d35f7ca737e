"""SVFAP models. Importing this package registers them with timm.

Layers, each importing only those above it in this list (tests/test_imports.py checks it):
``_helpers`` (file reading, state-dict utilities, errors) and ``variants`` (sizes); ``layers``,
``tpsbt``, ``pretrain`` (the model classes); ``tuning``; ``videomae`` and ``keymap`` (any
checkpoint's keys onto our models); ``factory`` (builder and registry); ``from_checkpoint``
(a model as its checkpoint records it). docs/model.md has the map.
"""
from ._helpers import CheckpointError, CheckpointMismatchError, CheckpointReadError, WeightsMismatchError, \
    checkpoint_args, compare_state_dicts, load_checkpoint_file
from .factory import MODEL_NAMES, UnknownModelError, create_model
from .flops import count_macs, count_params
from .from_checkpoint import model_from_checkpoint
from .keymap import load_pretrained, read_checkpoint
from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT

__all__ = ["CheckpointError", "CheckpointMismatchError", "CheckpointReadError", "WeightsMismatchError",
           "checkpoint_args", "compare_state_dicts", "load_checkpoint_file", "MODEL_NAMES", "UnknownModelError", "create_model", "count_macs", "count_params",
           "model_from_checkpoint", "load_pretrained", "read_checkpoint", "PretrainTPSBT", "TPSBT"]

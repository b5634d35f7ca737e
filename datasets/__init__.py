"""SVFAP data pipeline: annotations, frame readers, augmentations, masking,
pre-training and fine-tuning datasets. See the module docstrings for details.

Names are imported on first use, so the command-line tools (`python -m
datasets.check`, `python -m datasets.demo`) start without loading torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AnnotationError": "annotations", "Sample": "annotations",
    "parse_prefix_map": "annotations", "read_annotations": "annotations",
    "VideoReadError": "video_io", "open_source": "video_io", "read_clips": "video_io",
    "TubeMaskGenerator": "masking",
    "BadSampleError": "robust", "BadSampleWarning": "robust", "TooManyBadSamples": "robust",
    "DEFAULT_MAX_BAD_FRACTION": "robust",
    "PretrainDataset": "pretrain", "VideoClsDataset": "finetune",
    "multiple_samples_collate": "build", "build_pretraining_dataset": "build",
    "build_dataset": "build",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

"""Dataset builders from the training scripts' argparse namespace, and the
collate function for items that carry several clips."""
from __future__ import annotations

import os

import torch

from .finetune import VideoClsDataset
from .pretrain import PretrainDataset
from .robust import DEFAULT_MAX_BAD_FRACTION


def multiple_samples_collate(batch):
    """Collate items that each carry S clips (`num_sample` / `num_samples` > 1):
    every field is concatenated along its leading S dimension, so B items
    become a batch of B*S clips with matching targets, indices or masks."""
    return [torch.cat([torch.as_tensor(v) for v in values]) for values in zip(*batch)]


def _common(args) -> dict:
    return dict(
        data_root=getattr(args, "data_root", "") or "",
        prefix_map=getattr(args, "prefix_map", None),
        num_frames=getattr(args, "num_frames", 16),
        sampling_rate=getattr(args, "sampling_rate", 4),
        input_size=getattr(args, "input_size", 160),
        backend=getattr(args, "backend", "pyav"),
        strict=getattr(args, "strict", False),
        max_bad_fraction=getattr(args, "max_bad_fraction", DEFAULT_MAX_BAD_FRACTION),
    )


def pretraining_file(args) -> str:
    """`args.data_path` if it is the annotation file, else the pretrain.csv (or train.csv) in it."""
    path = args.data_path
    if os.path.isdir(path):
        pre = os.path.join(path, "pretrain.csv")
        path = pre if os.path.exists(pre) else os.path.join(path, "train.csv")
    return path


def split_file(split: str, args) -> str:
    """`<args.data_path>/<split>.csv`."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    return os.path.join(args.data_path, f"{split}.csv")


def build_pretraining_dataset(args) -> PretrainDataset:
    """`args.data_path` is the annotation file, or a folder holding pretrain.csv
    (else train.csv)."""
    path = pretraining_file(args)
    return PretrainDataset(
        path, **_common(args),
        patch_size=getattr(args, "patch_size", 16),
        tubelet_size=getattr(args, "tubelet_size", 2),
        mask_type=getattr(args, "mask_type", "tube"),
        mask_ratio=getattr(args, "mask_ratio", 0.9),
        face_crop=getattr(args, "face_crop", False),
        num_samples=getattr(args, "num_samples", 1),
    )


def has_validation_split(data_path) -> bool:
    """Whether the split folder holds a val.csv: only then is there anything to select a
    checkpoint on (DFEW, FERV39k and MAFW have none: their test split must not be used to select)."""
    return os.path.isfile(os.path.join(data_path, "val.csv"))


def build_dataset(split: str, args, mode: str | None = None) -> VideoClsDataset:
    """`split` in {'train', 'val', 'test'}: reads `<args.data_path>/<split>.csv` in the split's
    mode (train, validation, test), or in `mode` (e.g. the test split seen as validation is: one
    clip per video, for monitoring during training)."""
    path = split_file(split, args)
    num_targets = getattr(args, "num_targets", None)
    return VideoClsDataset(
        path, **_common(args),
        mode=mode or {"val": "validation"}.get(split, split),
        num_classes=None if num_targets else getattr(args, "nb_classes", None),
        num_targets=num_targets or None,
        short_side_size=getattr(args, "short_side_size", None),
        test_num_segment=getattr(args, "test_num_segment", 2),
        test_num_crop=getattr(args, "test_num_crop", 1),
        aa=getattr(args, "aa", "rand-m7-n4-mstd0.5-inc1"),
        num_sample=getattr(args, "num_sample", 1),
        crop_scale=getattr(args, "train_crop_scale", None) or (0.08, 1.0),
        frame_resize=getattr(args, "frame_resize", "square"),
    )

"""Fine-tuning clips for classification or regression: the release's pipeline (docs/recipes.md).

Every frame is first resized to `short_side_size` x `short_side_size` (`frame_resize="square"`,
the release's; `"keep_aspect"` resizes the short side instead).

train       a random window (`sampling.train_indices`); then, per clip drawn (`num_sample` > 1
            augments the decoded clip that many times): RandAugment at the resized size (one
            draw per clip, applied to each frame), a random resized crop to `input_size`
            (bilinear, no antialiasing), a horizontal flip. Random erasing works on normalised
            clips: the engine applies it on the device (engine/device_batch.py).
validation  a random window by the training rule (as the release), the centre crop.
test        `test_num_segment` windows on the stride grid (`sampling.segment_windows`) x
            `test_num_crop` crops placed along both axes (identical when the resized frame is
            the crop's size, as in the release's recipe); item `i` is view `i % num_views` of
            video `i // num_views`.

Items hold uint8 frames `(T, H, W, 3)`; the engine normalises them on the device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from . import transforms as T
from .annotations import read_annotations
from .robust import DEFAULT_MAX_BAD_FRACTION, SampleGuard
from .sampling import segment_windows, train_indices
from .video_io import read_clips

MODES = ("train", "validation", "test")


class VideoClsDataset(Dataset):
    def __init__(self, anno_path, data_root="", prefix_map=None, mode="train",
                 num_classes=None, num_targets=None, num_frames=16, sampling_rate=4,
                 input_size=160, short_side_size=None, test_num_segment=2, test_num_crop=1,
                 aa="rand-m7-n4-mstd0.5-inc1", num_sample=1, backend="pyav", strict=False,
                 max_bad_fraction=DEFAULT_MAX_BAD_FRACTION, flip=True, crop_scale=(0.08, 1.0),
                 frame_resize="square"):
        mode = {"val": "validation"}.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if test_num_segment < 1 or test_num_crop < 1 or num_sample < 1:
            raise ValueError("test_num_segment, test_num_crop and num_sample must be >= 1")
        self.samples = read_annotations(anno_path, data_root, prefix_map,
                                        num_classes=num_classes, num_targets=num_targets)
        self.mode, self.num_frames, self.sampling_rate = mode, num_frames, sampling_rate
        self.input_size = input_size
        self.short_side_size = short_side_size or input_size
        if self.short_side_size < input_size:
            raise ValueError("short_side_size must be at least input_size")
        self.test_num_segment, self.test_num_crop = test_num_segment, test_num_crop
        self.num_sample, self.backend, self.flip = num_sample, backend, flip
        self.crop_scale = tuple(crop_scale)
        if frame_resize not in T.FRAME_RESIZES:
            raise ValueError(f"frame_resize must be one of {T.FRAME_RESIZES}, not {frame_resize!r}")
        self.frame_resize = frame_resize
        self.rand_augment = T.ClipRandAugment(aa, input_size) if aa else None
        self.guard = SampleGuard(self.samples, strict, max_bad_fraction)

    @property
    def num_views(self) -> int:
        return self.test_num_segment * self.test_num_crop if self.mode == "test" else 1

    def __len__(self):
        return len(self.samples) * self.num_views

    def target(self, index: int) -> torch.Tensor:
        label = self.samples[index].label
        if isinstance(label, tuple):
            return torch.tensor(label, dtype=torch.float32)
        return torch.tensor(label, dtype=torch.int64)

    def _read(self, path, choose):
        """The frames of the clips `choose` picks (one reading for every clip of a sample)."""
        return read_clips(path, choose, self.backend)

    # -- train ---------------------------------------------------------------
    def _augment(self, clip: torch.Tensor) -> torch.Tensor:
        if self.rand_augment is not None:
            clip = self.rand_augment(clip)
        clip = T.random_resized_crop(clip, self.input_size, scale=self.crop_scale)
        if self.flip and np.random.uniform() < 0.5:  # the release's draw
            clip = T.hflip(clip)
        return T.to_frames(clip)

    def _load_train(self, index):
        def choose(n):
            return [train_indices(n, self.num_frames, self.sampling_rate)]
        (frames,) = self._read(self.samples[index].path, choose)
        clip = T.resize_frames(T.to_clip_tensor(frames), self.short_side_size, self.frame_resize)
        return [self._augment(clip) for _ in range(self.num_sample)]

    # -- validation / test -----------------------------------------------------
    def _load_eval(self, index, segment=0, crop=0):
        def choose(n):
            if self.mode == "validation":
                return [train_indices(n, self.num_frames, self.sampling_rate)]
            return [segment_windows(n, self.num_frames, self.sampling_rate, self.test_num_segment)[segment]]
        (frames,) = self._read(self.samples[index].path, choose)
        clip = T.eval_crop(T.to_clip_tensor(frames), self.input_size, self.short_side_size, crop,
                           self.test_num_crop if self.mode == "test" else 1, resize=self.frame_resize)
        return T.to_frames(clip)

    def __getitem__(self, index):
        if self.mode == "train":
            clips, used = self.guard.load(index, self._load_train)
            if self.num_sample == 1:
                return clips[0], self.target(used), used
            target = self.target(used)
            return (torch.stack(clips), torch.stack([target] * self.num_sample),
                    torch.full((self.num_sample,), used, dtype=torch.int64))
        if self.mode == "validation":
            clip, used = self.guard.load(index, self._load_eval)
            return clip, self.target(used), used
        video, view = divmod(index, self.num_views)
        segment, crop = divmod(view, self.test_num_crop)
        clip, used = self.guard.load(video, lambda j: self._load_eval(j, segment, crop))
        return clip, self.target(used), used, view

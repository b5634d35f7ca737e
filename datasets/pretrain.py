"""Pre-training clips (docs/recipes.md): 16 frames at stride 4 from a random start
(`sampling.pretrain_indices`, the release's rule), optional fixed upper-centre face crop,
multi-scale crop to the input size, and a tube mask. Clips stay uint8: the engine normalises them
and builds the reconstruction targets on the device (engine/device_batch.py)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from . import transforms as T
from .annotations import read_annotations
from .masking import TubeMaskGenerator
from .robust import DEFAULT_MAX_BAD_FRACTION, SampleGuard
from .sampling import pretrain_indices
from .video_io import read_clips


class PretrainDataset(Dataset):
    """Items are `(frames (T,H,W,3) uint8, mask (N,) bool, sample index)`; with
    `num_samples` S > 1 (repeated sampling), S clips from one reading of the video, each with
    its own window, crop and mask: `(clips (S,T,H,W,3), masks (S,N), indices (S,))` (use
    `multiple_samples_collate`). Labels in the annotation file are ignored.

    `face_crop=True` takes rows 0-160, cols 32-192 of a 224x224 frame before the
    multi-scale crop (the release turned it on for VoxCeleb2); other frame sizes
    get the box scaled proportionally, and 160x160 frames, already cropped by
    `python -m preprocess.voxceleb2 --recrop`, are taken whole.
    """

    def __init__(self, anno_path, data_root="", prefix_map=None, num_frames=16,
                 sampling_rate=4, input_size=160, patch_size=16, tubelet_size=2,
                 mask_type="tube", mask_ratio=0.9, face_crop=False, num_samples=1,
                 backend="pyav", strict=False, max_bad_fraction=DEFAULT_MAX_BAD_FRACTION):
        if mask_type != "tube":
            raise ValueError(f"only tube masking is implemented, not {mask_type!r}")
        if input_size % patch_size or num_frames % tubelet_size:
            raise ValueError("input_size must divide by patch_size and num_frames by tubelet_size")
        self.samples = read_annotations(anno_path, data_root, prefix_map)
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.face_crop, self.num_samples, self.backend = face_crop, num_samples, backend
        side = input_size // patch_size
        self.mask_generator = TubeMaskGenerator((num_frames // tubelet_size, side, side), mask_ratio)
        self.crop = T.MultiScaleCrop(input_size)
        self.guard = SampleGuard(self.samples, strict, max_bad_fraction)

    def __len__(self):
        return len(self.samples)

    def _read(self, path, choose):
        """The frames of the clips `choose` picks (one reading for every clip of a sample)."""
        return read_clips(path, choose, self.backend)

    def _load(self, index):
        def choose(n):
            return [pretrain_indices(n, self.num_frames, self.sampling_rate)
                    for _ in range(self.num_samples)]
        clips, masks = [], []
        for frames in self._read(self.samples[index].path, choose):
            clip = T.to_clip_tensor(frames)
            box = T.face_box(*clip.shape[-2:]) if self.face_crop else None
            clips.append(T.to_frames(self.crop(clip, box)))
            masks.append(torch.from_numpy(self.mask_generator()))
        return clips, masks

    def __getitem__(self, index):
        (clips, masks), used = self.guard.load(index, self._load)
        if self.num_samples == 1:
            return clips[0], masks[0], used
        return (torch.stack(clips), torch.stack(masks),
                torch.full((self.num_samples,), used, dtype=torch.int64))

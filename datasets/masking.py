"""Tube masking (VideoMAE / SVFAP pre-training): one random spatial mask shared
by every time step, so each time step keeps the same visible positions (what
lets the temporal convolution run on visible tokens only)."""
from __future__ import annotations

import numpy as np


class TubeMaskGenerator:
    def __init__(self, input_size, mask_ratio: float):
        self.frames, self.height, self.width = input_size
        self.per_frame = self.height * self.width
        self.masked_per_frame = int(mask_ratio * self.per_frame)
        self.total = self.frames * self.per_frame
        self.num_masked = self.frames * self.masked_per_frame  # every mask's count: a static shape

    def __call__(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Bool `(T*H*W,)` in (t, h, w) order, True = masked."""
        # The module-level numpy RNG is what DataLoader re-seeds in each worker.
        rng = np.random if rng is None else rng
        frame = np.zeros(self.per_frame, dtype=bool)
        frame[rng.permutation(self.per_frame)[:self.masked_per_frame]] = True
        return np.tile(frame, self.frames)

    def __repr__(self):
        return (f"TubeMaskGenerator(frames={self.frames}, positions={self.per_frame}, "
                f"masked per frame={self.masked_per_frame})")

"""Clips of whole videos for inference (prediction, features, pictures): windows over the video,
each frame decoded once, optionally face-cropped, each clip seen as the test split sees it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import transforms as T
from .video_io import DEFAULT_BACKEND, VideoReadError, decode_frames, read_clips


@dataclass
class ClipSpec:
    """How a model sees a clip: its input size, the size frames are resized to before the centre
    crop and how (`T.FRAME_RESIZES`), and whether the fixed face box of pre-training is taken
    first."""
    input_size: int = 160
    short_side_size: int | None = None
    face_box: bool = False
    resize: str | None = "square"

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 `(T, H, W, 3)` frames → the normalised `(3, T, S, S)` clip."""
        clip = T.to_clip_tensor(np.ascontiguousarray(frames))
        return T.eval_view(clip, self.input_size, self.short_side_size, face=self.face_box,
                           resize=self.resize or "square")


@dataclass
class WindowBatch:
    """The clips of some windows of one video, with where each window lies in the video."""
    clips: torch.Tensor                          # (W, 3, T, S, S)
    windows: list = field(default_factory=list)  # frame indices per window
    face: dict | None = None                     # face-crop detection info, when cropping


def load_windows(path, windows, spec: ClipSpec, backend=DEFAULT_BACKEND, crop_faces=None, source=None) -> WindowBatch:
    """Decode the frames `windows` need (once each), crop them with `crop_faces(frames, indices)
    -> (crops or None, info)` if given (`indices`: the frames' numbers in the video), and build
    one clip per window. `source`: the video already open (`open_source`), for reading a long
    video chunk after chunk in one pass."""
    union = sorted(set(np.concatenate(windows).tolist()))
    if source is not None:
        frames = decode_frames(source, union, path)
    else:
        (frames,) = read_clips(path, lambda n: [union], backend)
    info = None
    if crop_faces is not None:
        frames, info = crop_faces(frames, union)
        if frames is None:
            raise VideoReadError(f"{path}: no face found in {info['frames']} frames (run without face cropping?)")
    where = {t: k for k, t in enumerate(union)}
    clips = torch.stack([spec(frames[[where[i] for i in w.tolist()]]) for w in windows])
    return WindowBatch(clips, list(windows), info)

"""Which frames a clip takes from a video of `n` frames.

A clip is `num_frames` frames `rate` apart, spanning `(num_frames-1)*rate + 1`
frames. Videos shorter than that are sampled across their whole length and
padded with the last frame, as the release does: `n // rate` evenly spaced
frames, then repeats of frame `n - 1`.
"""
from __future__ import annotations

import random

import numpy as np


def clip_span(num_frames: int, rate: int) -> int:
    return (num_frames - 1) * rate + 1


def short_video_indices(n: int, num_frames: int, rate: int) -> np.ndarray:
    k = min(num_frames, max(1, n // rate))
    spread = np.round(np.linspace(0, n - 1, k)).astype(np.int64)
    return np.concatenate([spread, np.full(num_frames - k, n - 1, dtype=np.int64)])


def window_at(start: int, num_frames: int, rate: int) -> np.ndarray:
    return start + rate * np.arange(num_frames, dtype=np.int64)


def random_window(n: int, num_frames: int, rate: int, rng=random) -> np.ndarray:
    """Training: a window at a uniformly random start."""
    span = clip_span(num_frames, rate)
    if n < span:
        return short_video_indices(n, num_frames, rate)
    return window_at(rng.randint(0, n - span), num_frames, rate)


def uniform_windows(n: int, num_frames: int, rate: int, count: int) -> list[np.ndarray]:
    """Testing: `count` windows evenly placed from the first frame to the last;
    a single window is centred. Short videos give `count` identical clips."""
    span = clip_span(num_frames, rate)
    if n < span:
        return [short_video_indices(n, num_frames, rate)] * count
    if count == 1:
        starts = [(n - span) // 2]
    else:
        starts = np.round(np.linspace(0, n - span, count)).astype(int).tolist()
    return [window_at(s, num_frames, rate) for s in starts]


def centre_window(n: int, num_frames: int, rate: int) -> np.ndarray:
    return uniform_windows(n, num_frames, rate, 1)[0]


def sliding_windows(n: int, num_frames: int, rate: int, stride: int | None = None) -> list[np.ndarray]:
    """Windows covering every frame of an `n`-frame video: starts `stride` frames apart (default:
    one clip span, so windows touch), the last one ending on the last frame. A video shorter than
    one span gets the single padded clip the datasets use."""
    span = clip_span(num_frames, rate)
    if n < span:
        return [short_video_indices(n, num_frames, rate)]
    stride = stride or span
    starts = list(range(0, n - span + 1, stride))
    if starts[-1] + span < n:
        starts.append(n - span)
    return [window_at(s, num_frames, rate) for s in starts]


WINDOW_MODES = ("sliding", "uniform", "centre")


def plan_windows(n: int, num_frames: int, rate: int, mode: str = "sliding", stride: int | None = None,
                 num_segments: int = 2) -> list[np.ndarray]:
    """`sliding` (cover the video), `uniform` (the test split's `num_segments` evenly placed
    clips) or `centre` (the validation split's single clip)."""
    if mode == "sliding":
        return sliding_windows(n, num_frames, rate, stride)
    if mode == "uniform":
        return uniform_windows(n, num_frames, rate, num_segments)
    if mode == "centre":
        return uniform_windows(n, num_frames, rate, 1)
    raise ValueError(f"window mode must be one of {WINDOW_MODES}, not {mode!r}")


def chunk_windows(windows: list[np.ndarray], max_frames: int) -> list[list[np.ndarray]]:
    """Groups of consecutive windows whose decoded frames stay under `max_frames` (bounded memory
    on long videos)."""
    chunks, current, frames = [], [], set()
    for w in windows:
        grown = frames | set(w.tolist())
        if current and len(grown) > max_frames:
            chunks.append(current)
            current, grown = [], set(w.tolist())
        current.append(w)
        frames = grown
    if current:
        chunks.append(current)
    return chunks

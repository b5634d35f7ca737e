"""Which frames a clip takes from a video of `n` frames: the release's rules (docs/recipes.md).

fine-tuning, training and validation  `train_indices`: a span of `num_frames * rate` frames ending
    at a random frame, `num_frames` of them evenly spread (linspace, so the stride is not exact);
    a video of at most that span: `n // rate` frames spread over it, padded with its last frame.
test  `segment_windows`: the video's stride grid (frames 0, rate, 2 rate, ...), padded with its last
    frame to `num_frames`; the `test_num_segment` windows start at `int(k * step)` grid positions,
    `step = (T - num_frames) / (segments - 1)` for T grid frames.
pre-training  `pretrain_indices`: exact stride from a start drawn in `[0, n - num_frames * rate]`;
    shorter videos from frame 0, the last frame reached repeated (VideoMAE's loader).

`sliding_windows` (prediction on whole videos) is not part of the protocol: windows side by side,
the last one ending on the last frame, a short video padded as the test split pads it.
"""
from __future__ import annotations

import numpy as np


def clip_span(num_frames: int, rate: int) -> int:
    return (num_frames - 1) * rate + 1


def window_at(start: int, num_frames: int, rate: int) -> np.ndarray:
    return start + rate * np.arange(num_frames, dtype=np.int64)


def train_indices(n: int, num_frames: int, rate: int, rng=np.random) -> np.ndarray:
    """Training and validation clips. ``rng`` has numpy's ``randint`` (high exclusive)."""
    span = num_frames * rate
    if n <= span:
        k = n // rate
        spread = np.concatenate([np.linspace(0, n, num=k), np.full(num_frames - k, float(n))])
        return np.clip(spread, 0, n - 1).astype(np.int64)
    end = int(rng.randint(span, n))
    start = end - span
    return np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64)


def stride_grid(n: int, num_frames: int, rate: int) -> np.ndarray:
    """Frames 0, rate, 2 rate, ... of the video, padded with the last of them to `num_frames`."""
    grid = np.arange(0, n, rate, dtype=np.int64)
    if len(grid) < num_frames:
        grid = np.concatenate([grid, np.full(num_frames - len(grid), grid[-1], dtype=np.int64)])
    return grid


def short_video_indices(n: int, num_frames: int, rate: int) -> np.ndarray:
    """The one clip of a video shorter than a clip span: its stride grid, padded."""
    return stride_grid(n, num_frames, rate)[:num_frames]


def segment_windows(n: int, num_frames: int, rate: int, count: int) -> list[np.ndarray]:
    """The test split's `count` windows (identical for a video of at most `num_frames` grid
    frames). A single window is centred."""
    grid = stride_grid(n, num_frames, rate)
    free = len(grid) - num_frames
    if count == 1:
        starts = [free // 2]
    else:
        step = max(1.0 * free / (count - 1), 0)  # the release's expression: int() of this, times k
        starts = [int(k * step) for k in range(count)]
    return [grid[s:s + num_frames] for s in starts]


def pretrain_indices(n: int, num_frames: int, rate: int, rng=np.random) -> np.ndarray:
    """Pre-training clips. ``rng`` has numpy's ``randint`` (high exclusive)."""
    room = n - num_frames * rate + 1
    frame = int(rng.randint(room)) if room > 0 else 0
    out = np.empty(num_frames, dtype=np.int64)
    for i in range(num_frames):
        out[i] = frame
        if frame + 1 + rate < n:  # the next frame exists and is not the video's last
            frame += rate
    return out


def sliding_windows(n: int, num_frames: int, rate: int, stride: int | None = None) -> list[np.ndarray]:
    """Windows covering every frame of an `n`-frame video: starts `stride` frames apart (default:
    one clip span, so windows touch), the last one ending on the last frame. A video shorter than
    one span gets the single padded clip of the test split."""
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
    """`sliding` (cover the video), `uniform` (the test split's `num_segments` windows) or
    `centre` (the test split's rule for a single window)."""
    if mode == "sliding":
        return sliding_windows(n, num_frames, rate, stride)
    if mode == "uniform":
        return segment_windows(n, num_frames, rate, num_segments)
    if mode == "centre":
        return segment_windows(n, num_frames, rate, 1)
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

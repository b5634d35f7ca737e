"""Face cropping for raw videos: detect, track, smooth, crop a square, resize, write.

    python -m preprocess.face_crop VIDEO_OR_DIR [...] --out OUT [--format jpg|mp4] [--size 224]
                                   [--margin 0.3] [--workers N] [--frame_step 1] [--max_frames N]

Each video becomes OUT/<path relative to its input folder, without extension>/ (jpg frames
00001.jpg, 00002.jpg, ...) or OUT/<...>.mp4 (H.264). Videos are read and written through PyAV, as
training reads them (`datasets.video_io`). Finished videos are skipped on a rerun: output is
written under a temporary name and renamed when complete, so an existing output is a finished
one. Videos in which no face is found get no output but an empty `<name>.noface` marker, and are
listed (with unreadable ones) in OUT/face_crop_report.json; reruns report them again.

The detector is OpenCV's frontal-face Haar cascade (preprocess/haar.py), which needs no download.
Faces are detected on a downscaled grey frame every `detect_every` frames. The track keeps the
largest face per frame, drops detections that disagree with their neighbours, starts a new
segment at a shot cut (a jump of the face), interpolates frames without a detection and averages
the box over a sliding window inside each segment, so crops do not jitter.

From other code: `crop_faces(frames)` crops a list of RGB frames in memory, `frame_cropper()` gives
the cropper inference uses, and `crop_video(src, dst)` processes one file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from datasets.video_io import VIDEO_EXTS, iter_frames, video_fps, write_mp4
from preprocess.haar import detect_faces


@dataclass
class CropConfig:
    size: int = 224               # output side (DFEW-style 224)
    margin: float = 0.3           # added on each side, as a fraction of the detected box side
    fmt: str = "jpg"              # "jpg" frame folders or "mp4"
    jpeg_quality: int = 95
    frame_step: int = 1           # keep every n-th frame of the video
    max_frames: int | None = None  # stop after this many kept frames
    detect_every: int = 2         # run the detector on every n-th kept frame
    det_short_side: int = 192     # detection image: shorter side resized to this
    min_face: float = 0.15        # smallest face side, fraction of the shorter side
    scale_factor: float = 1.15
    min_neighbors: int = 3
    smooth: int = 9               # moving-average window (frames) over the track
    jump: float = 0.5             # centre move (in face sides) that counts as a shot cut
    cascade: str | None = None


def read_frames(path: str | os.PathLike, step: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Every `step`-th RGB frame, decoded one at a time."""
    return iter_frames(str(path), step, max_frames)


def _fps(path) -> float:
    fps = video_fps(str(path)) or 25.0
    return fps if 1 <= fps <= 240 else 25.0


def detect_boxes(frames: Iterable[np.ndarray], cfg: CropConfig) -> tuple[np.ndarray, int]:
    """Raw detections: (n, 3) array of centre x, centre y, side (NaN where none), frame count."""
    rows = []
    for i, frame in enumerate(frames):
        if i % cfg.detect_every:
            rows.append((np.nan,) * 3)
            continue
        h, w = frame.shape[:2]
        s = min(1.0, cfg.det_short_side / min(h, w))
        small = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small)
        faces = detect_faces(gray, cfg.scale_factor, cfg.min_neighbors,
                             max(24, int(cfg.min_face * min(gray.shape))), cfg.cascade)
        if faces:
            # The subject of a face dataset is the largest face; background faces are smaller.
            x, y, fw, fh, _ = max(faces, key=lambda f: (f[2] * f[3], f[4]))
            rows.append(((x + fw / 2) / s, (y + fh / 2) / s, max(fw, fh) / s))
        else:
            rows.append((np.nan,) * 3)
    return np.array(rows, dtype=float).reshape(-1, 3), len(rows)


def _far(a: np.ndarray, b: np.ndarray, jump: float) -> bool:
    side = min(a[2], b[2])
    return np.hypot(a[0] - b[0], a[1] - b[1]) > jump * side or max(a[2], b[2]) > 1.5 * side


def smooth_track(raw: np.ndarray, cfg: CropConfig) -> np.ndarray | None:
    """A box for every frame from sparse, noisy detections; None if nothing was detected."""
    n = len(raw)
    obs = np.nonzero(~np.isnan(raw[:, 0]))[0]
    if obs.size == 0:
        return None
    # A detection far from the median of its neighbouring detections is a false positive.
    keep = []
    for j, i in enumerate(obs):
        near = raw[obs[max(0, j - 3):j + 4]]
        if not _far(raw[i], np.median(near, axis=0), cfg.jump):
            keep.append(i)
    obs = np.array(keep or obs[:1])
    # Segments: runs of detections without a jump; a jump is a shot cut, never smoothed across.
    segs = [[obs[0]]]
    for a, b in zip(obs[:-1], obs[1:]):
        (segs.append([b]) if _far(raw[a], raw[b], cfg.jump) else segs[-1].append(b))
    out = np.empty((n, 3))
    bounds = [0] + [(s[0] + p[-1]) // 2 + 1 for p, s in zip(segs[:-1], segs[1:])] + [n]
    for seg, lo, hi in zip(segs, bounds[:-1], bounds[1:]):
        seg = np.array(seg)
        t = np.arange(lo, hi)
        track = np.stack([np.interp(t, seg, raw[seg, c]) for c in range(3)], 1)
        k = min(cfg.smooth, len(t))
        if k > 1:
            pad = np.pad(track, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
            kernel = np.ones(k) / k
            track = np.stack([np.convolve(pad[:, c], kernel, mode="valid") for c in range(3)], 1)
        out[lo:hi] = track
    return out


def crop_frame(frame: np.ndarray, box: Sequence[float], size: int, margin: float) -> np.ndarray:
    cx, cy, side = box
    half = side * (1 + 2 * margin) / 2
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    x1, y1 = int(round(cx + half)), int(round(cy + half))
    h, w = frame.shape[:2]
    # Out-of-frame parts are black, so the face keeps its place and scale near the border.
    pad = [max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w)]
    patch = frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if any(pad):
        patch = cv2.copyMakeBorder(patch, *pad, cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)


def crop_faces(frames: Sequence[np.ndarray], cfg: CropConfig | None = None):
    """Crop a list of RGB frames in memory: (crops or None if no face, per-frame boxes, info)."""
    cfg = cfg or CropConfig()
    raw, n = detect_boxes(frames, cfg)
    boxes = smooth_track(raw, cfg)
    info = _info(raw, n, cfg)
    if boxes is None:
        return None, None, info
    return [crop_frame(f, b, cfg.size, cfg.margin) for f, b in zip(frames, boxes)], boxes, info


def frame_cropper(size: int = 224, margin: float = 0.3):
    """`crop(frames) -> (crops (N, S, S, 3) or None, info)` for RGB frames in memory, as inference
    uses it: the detector on every frame given, the track smoothed over 3 of them."""
    cfg = CropConfig(size=size, margin=margin, detect_every=1, smooth=3)

    def crop(frames):
        crops, _, info = crop_faces(list(frames), cfg)
        return (None if crops is None else np.stack(crops)), info
    return crop


def _info(raw: np.ndarray, n: int, cfg: CropConfig) -> dict:
    tried = -(-n // cfg.detect_every)
    hits = int((~np.isnan(raw[:, 0])).sum())
    return {"frames": n, "detections": hits, "detect_rate": round(hits / tried, 4) if tried else 0.0}


def output_path(dst: str | os.PathLike, cfg: CropConfig) -> Path:
    return Path(str(dst) + ".mp4") if cfg.fmt == "mp4" else Path(dst)


def crop_video(src: str | os.PathLike, dst: str | os.PathLike, cfg: CropConfig | None = None) -> dict:
    """Crop one video to `dst` (frame folder, or dst + '.mp4'); returns a status dict.

    Status: "done" (already there, skipped), "ok", "no_face" or "error". Frames are read twice
    (detect, then crop) so that a long video never has to fit in memory.
    """
    cfg = cfg or CropConfig()
    out = output_path(dst, cfg)
    noface = Path(str(dst) + ".noface")
    res = {"video": str(src), "output": str(out)}
    if out.exists():
        return {**res, "status": "done"}
    if noface.exists():
        return {**res, "status": "no_face"}
    try:
        raw, n = detect_boxes(read_frames(src, cfg.frame_step, cfg.max_frames), cfg)
        res.update(_info(raw, n, cfg))
        if n == 0:
            return {**res, "status": "error", "error": "no frame could be decoded"}
        boxes = smooth_track(raw, cfg)
        if boxes is None:
            noface.parent.mkdir(parents=True, exist_ok=True)
            noface.touch()
            return {**res, "status": "no_face"}
        # The writer picks the container from the extension, so it must stay last.
        tmp = out.with_name(out.stem + ".partial" + out.suffix)
        frames = read_frames(src, cfg.frame_step, cfg.max_frames)
        crops = (crop_frame(f, b, cfg.size, cfg.margin) for f, b in zip(frames, boxes))
        _write(crops, tmp, cfg, _fps(src) / cfg.frame_step)
        os.replace(tmp, out)
        return {**res, "status": "ok"}
    except Exception as e:  # one bad file must not stop a dataset-wide run
        return {**res, "status": "error", "error": f"{type(e).__name__}: {e}"}


def _write(crops: Iterable[np.ndarray], tmp: Path, cfg: CropConfig, fps: float) -> None:
    if tmp.exists():  # left over from an interrupted run
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if cfg.fmt == "mp4":
        write_mp4(str(tmp), crops, fps)
        return
    tmp.mkdir()
    for i, c in enumerate(crops, 1):
        Image.fromarray(c).save(tmp / f"{i:05d}.jpg", quality=cfg.jpeg_quality)


def _worker_init():
    cv2.setNumThreads(1)  # parallelism comes from the process pool


def _job(args):
    src, dst, cfg = args
    return crop_video(src, dst, cfg)


def crop_videos(jobs: Sequence[tuple[str, str]], cfg: CropConfig | None = None, workers: int = 1,
                report: str | os.PathLike | None = None) -> list[dict]:
    """Crop many (src, dst) pairs over a process pool with a progress bar; results in job order."""
    from tqdm import tqdm

    cfg = cfg or CropConfig()
    tasks = [(s, d, cfg) for s, d in jobs]
    results: list[dict] = [None] * len(tasks)  # type: ignore
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        # Spawned, not forked: a fork copies locks held by the caller's threads (decoder, OpenMP,
        # OpenCV), and a worker that needs one waits forever.
        with mp.get_context("spawn").Pool(
                workers, initializer=_worker_init) as pool:
            it = pool.imap(_job, tasks, chunksize=1)
            for i, r in enumerate(tqdm(it, total=len(tasks), desc="face crop", unit="video")):
                results[i] = r
    else:
        for i, t in enumerate(tqdm(tasks, desc="face crop", unit="video")):
            results[i] = _job(t)
    summarize(results, report, cfg)
    return results


def summarize(results: list[dict], report, cfg: CropConfig) -> None:
    by = {s: [r for r in results if r["status"] == s] for s in ("ok", "done", "no_face", "error")}
    print(f"face crop: {len(by['ok'])} cropped, {len(by['done'])} already done, "
          f"{len(by['no_face'])} without a face, {len(by['error'])} unreadable")
    for r in by["no_face"]:
        print(f"  no face: {r['video']}")
    for r in by["error"]:
        print(f"  error: {r['video']}: {r.get('error')}")
    if report:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({
            "config": asdict(cfg),
            "no_face": [r["video"] for r in by["no_face"]],
            "errors": [{"video": r["video"], "error": r.get("error")} for r in by["error"]],
            "videos": results,
        }, indent=1))


def find_videos(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
    """(video, name relative to its input without extension) for files and folders given."""
    out = []
    for inp in map(Path, inputs):
        if inp.is_dir():
            for p in sorted(inp.rglob("*")):
                if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                    out.append((p, p.relative_to(inp).with_suffix("")))
        elif inp.is_file():
            out.append((inp, Path(inp.stem)))
        else:
            raise FileNotFoundError(f"no such video or folder: {inp}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="video files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--format", choices=("jpg", "mp4"), default="jpg")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--report", type=Path, default=None, help="default: OUT/face_crop_report.json")
    d = CropConfig()
    for field in ("size", "margin", "frame_step", "max_frames", "detect_every", "det_short_side",
                  "min_face", "smooth", "cascade"):
        default = getattr(d, field)
        typ = type(default) if default is not None else (int if field == "max_frames" else str)
        p.add_argument(f"--{field}", type=typ, default=default)
    a = p.parse_args(argv)
    cfg = CropConfig(size=a.size, margin=a.margin, fmt=a.format, frame_step=a.frame_step,
                     max_frames=a.max_frames, detect_every=a.detect_every,
                     det_short_side=a.det_short_side, min_face=a.min_face, smooth=a.smooth,
                     cascade=a.cascade)
    videos = find_videos(a.inputs)
    if not videos:
        print("error: no videos found", file=sys.stderr)
        return 2
    results = crop_videos([(str(v), str(a.out / name)) for v, name in videos], cfg, a.workers,
                          a.report or a.out / "face_crop_report.json")
    return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

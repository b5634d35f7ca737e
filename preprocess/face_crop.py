"""Face cropping for raw videos: detect, track, smooth, crop a square, resize, write.

    python -m preprocess.face_crop VIDEO_OR_DIR [...] --out OUT [--format jpg|mp4] [--size 224]
                                   [--margin 0.3] [--workers N] [--frame_step 1] [--max_frames N]

Each video becomes OUT/<path relative to its input folder, without extension>/ (jpg frames
00001.jpg, 00002.jpg, ...) or OUT/<...>.mp4 (H.264). Videos are read and written through PyAV, as
training reads them (`datasets.video_io`). Finished videos are skipped on a rerun: output is
written under a temporary name and renamed when complete, so an existing output is a finished
one. Videos in which no face is found get no output but an empty `<name>.noface` marker, and are
listed (with unreadable ones) in OUT/face_crop_report.json; reruns report them again.

The detector is dlib's HOG face detector (preprocess/faces.py), which needs no download; it runs
every `detect_every` frames on a frame resized to the smallest face asked for (`min_face`). The
track keeps the largest face per frame (the subject of a face dataset), drops detections that
disagree with their neighbours, starts a new segment at a shot cut (a jump of the face),
interpolates frames without a detection and averages the box over a sliding window inside each
segment, so crops do not jitter.

From other code: `crop_faces(frames)` crops a list of RGB frames in memory, `frame_cropper()` gives
the cropper inference uses, and `crop_video(src, dst)` processes one file.
"""
from __future__ import annotations

import argparse
import errno
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
from engine.cli import UserError, run_entry
from preprocess.faces import CROP_MARGIN, FaceDetector, centre_side, crop_frame, smooth_track


@dataclass
class CropConfig:
    size: int = 224               # output side (DFEW-style 224)
    margin: float = CROP_MARGIN   # added on each side, as a fraction of the detected box side
    fmt: str = "jpg"              # "jpg" frame folders or "mp4"
    jpeg_quality: int = 95
    frame_step: int = 1           # keep every n-th frame of the video
    max_frames: int | None = None  # stop after this many kept frames
    detect_every: int = 2         # run the detector on every n-th kept frame
    min_face: float = 0.2         # smallest face side, fraction of the shorter frame side
    threshold: float = 0.0        # detector score threshold
    smooth: int = 9               # moving-average window (frames) over the track
    jump: float = 0.5             # centre move (in face sides) that counts as a shot cut


def read_frames(path: str | os.PathLike, step: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Every `step`-th RGB frame, decoded one at a time."""
    return iter_frames(str(path), step, max_frames)


def _fps(path) -> float:
    fps = video_fps(str(path)) or 25.0
    return fps if 1 <= fps <= 240 else 25.0


def detect_boxes(frames: Iterable[np.ndarray], cfg: CropConfig) -> tuple[np.ndarray, int]:
    """Raw detections: (n, 3) array of centre x, centre y, side (NaN where none), frame count."""
    detector = FaceDetector(cfg.min_face, cfg.threshold)
    rows = []
    for i, frame in enumerate(frames):
        faces = detector(frame) if i % cfg.detect_every == 0 else None
        # The subject of a face dataset is the largest face; background faces are smaller.
        best = faces.largest() if faces is not None else None
        rows.append(centre_side(faces.boxes[best])[0] if best is not None else (np.nan,) * 3)
    return np.array(rows, dtype=float).reshape(-1, 3), len(rows)


def crop_faces(frames: Sequence[np.ndarray], cfg: CropConfig | None = None):
    """Crop a list of RGB frames in memory: (crops or None if no face, per-frame boxes, info)."""
    cfg = cfg or CropConfig()
    raw, n = detect_boxes(frames, cfg)
    boxes = smooth_track(raw, cfg.smooth, cfg.jump)
    info = _info(raw, n, cfg)
    if boxes is None:
        return None, None, info
    return [crop_frame(f, b, cfg.size, cfg.margin) for f, b in zip(frames, boxes)], boxes, info


def frame_cropper(size: int = 224, margin: float = CROP_MARGIN):
    """`crop(frames, indices=None) -> (crops (N, S, S, 3) or None, info)` for RGB frames in memory,
    as inference uses it: the detector on every frame given, the track smoothed over 3 of them."""
    cfg = CropConfig(size=size, margin=margin, detect_every=1, smooth=3)

    def crop(frames, indices=None):
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

    Status: "done" (already there, skipped), "ok", "no_face", "error" (the video could not be
    read) or "write_error" (the crop could not be written: a full disk, a quota, permissions; its
    partial output is removed). Frames are read twice (detect, then crop) so that a long video
    never has to fit in memory.
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
        boxes = smooth_track(raw, cfg.smooth, cfg.jump)
        if boxes is None:
            noface.parent.mkdir(parents=True, exist_ok=True)
            noface.touch()
            return {**res, "status": "no_face"}
        # The writer picks the container from the extension, so it must stay last.
        tmp = out.with_name(out.stem + ".partial" + out.suffix)
        frames = read_frames(src, cfg.frame_step, cfg.max_frames)
        crops = (crop_frame(f, b, cfg.size, cfg.margin) for f, b in zip(frames, boxes))
        try:
            _write(crops, tmp, cfg, _fps(src) / cfg.frame_step)
            os.replace(tmp, out)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            _remove(tmp)
            return {**res, "status": "write_error", "error": f"cannot write {out}: {e.strerror or e}"}
        return {**res, "status": "ok"}
    except Exception as e:  # one bad file must not stop a dataset-wide run
        return {**res, "status": "error", "error": f"{type(e).__name__}: {e}"}


# A failed write of a crop is the disk's fault, not the video's (PyAV's errors are OSErrors too).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _remove(path: Path) -> None:
    try:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    except OSError:
        pass


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
    by = {s: [r for r in results if r["status"] == s] for s in ("ok", "done", "no_face", "error", "write_error")}
    print(f"face crop: {len(by['ok'])} cropped, {len(by['done'])} already done, "
          f"{len(by['no_face'])} without a face, {len(by['error'])} unreadable"
          + (f", {len(by['write_error'])} not written (disk)" if by["write_error"] else ""))
    for r in by["write_error"]:
        print(f"  write error: {r['error']}")
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
    for field in ("size", "margin", "frame_step", "max_frames", "detect_every", "min_face", "threshold",
                  "smooth"):
        default = getattr(d, field)
        typ = type(default) if default is not None else int
        p.add_argument(f"--{field}", type=typ, default=default)
    a = p.parse_args(argv)
    cfg = CropConfig(size=a.size, margin=a.margin, fmt=a.format, frame_step=a.frame_step,
                     max_frames=a.max_frames, detect_every=a.detect_every, min_face=a.min_face,
                     threshold=a.threshold, smooth=a.smooth)
    videos = find_videos(a.inputs)
    if not videos:
        raise UserError("no videos found")
    results = crop_videos([(str(v), str(a.out / name)) for v, name in videos], cfg, a.workers,
                          a.report or a.out / "face_crop_report.json")
    unwritten = [r for r in results if r["status"] == "write_error"]
    if unwritten:
        print(f"error: {len(unwritten)} crop(s) could not be written ({unwritten[0]['error']}); rerun after freeing "
              f"space: the crops done are kept", file=sys.stderr)
    return 1 if any(r["status"] in ("error", "write_error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(run_entry(main))

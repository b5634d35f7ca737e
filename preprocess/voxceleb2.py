"""VoxCeleb2 (dev) for pre-training: scan the clips -> <out>/train.csv (`<path> 0`, no labels).

Reads, under --root:
  dev/mp4/<speaker id>/<youtube id>/<clip>.mp4   (224x224 face tracks, 25 fps)
With --check every clip is opened in a process pool and read as `python -m datasets.check` reads
it (first, middle and last frames); clips that cannot be decoded are left out and listed in
<out>/undecodable.txt, instead of relying on a fixed exclusion list. The split file is named
train.csv so that --data_path <out> works for run_pretrain.py like for fine-tuning.

With --recrop DIR (optional, offline, once) every clip is also written to DIR under the same
relative path as the fixed upper-centre 160x160 face crop that pre-training takes (rows 0-160,
cols 32-192 of VoxCeleb2's 224x224 frames; `--face_crop True`; the same box scaled, then resized to
160x160, for other frame sizes), H.264 with a keyframe every --gop frames, no B-frame pyramid
(every B-frame a non-reference frame the reader can skip) and x264's fast-decode tuning (CAVLC, no
deblocking; about +10% in size): half the pixels to decode, each cheaper, and little decoding
before a clip's first frame. Pre-train from it with --data_root DIR (same train.csv, same
options: frames already of the face box's size are not cropped again). Audio is not copied.
Resumable (finished clips are skipped, partial files replaced; to rewrite with another --gop,
delete DIR first); clips that cannot be read are left out and listed like --check's; a clip that
cannot be written (disk full, read-only or wrong DIR) stops the run with an error, train.csv
untouched. docs/speed.md has its cost and gain.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from datasets.check import check_sample
from datasets.face_box import RECROPPED_SIZE, face_box
from datasets.video_io import VideoReadError, iter_frames, video_fps, write_mp4
from engine.cli import RunError, run_entry
from preprocess import common

RECROP_GOP = 16
# Without a B-frame pyramid no B-frame is a reference: the reader skips those a clip does not use.
# fastdecode (CAVLC, no deblocking) makes every frame cheaper to decode at the same PSNR (docs/speed.md).
RECROP_X264 = {"x264-params": "b-pyramid=none", "tune": "fastdecode"}


def scan(root: Path) -> list[str]:
    base = common.require(root / "dev" / "mp4", "VoxCeleb2 clip folder (dev/mp4)")
    clips = []
    # os.scandir keeps a 1M-file scan to a few minutes on network file systems.
    for spk in sorted(os.scandir(base), key=lambda e: e.name):
        if not spk.is_dir():
            continue
        for vid in sorted(os.scandir(spk.path), key=lambda e: e.name):
            if vid.is_dir():
                clips += sorted(f"dev/mp4/{spk.name}/{vid.name}/{c.name}" for c in os.scandir(vid.path)
                                if c.name.endswith(".mp4"))
    return clips


def decodable(path: str) -> tuple[str, str | None]:
    """(path, None) if its first, middle and last frames decode, else (path, reason)."""
    return path, check_sample(path)


class RecropWriteError(Exception):
    """A recropped clip could not be written: the run stops (nothing to do with the source clip)."""


def recrop_clip(src: str, dst: str, gop: int = RECROP_GOP) -> str | None:
    """Write the fixed face box of every frame of `src` to the mp4 `dst` as 160x160 frames (already
    there: nothing to do). None when done, else why `src` could not be read; a failure to write
    `dst` raises RecropWriteError."""
    out = Path(dst)
    if out.exists():
        return None
    tmp = out.with_name(out.stem + ".partial" + out.suffix)  # renamed when complete

    def crops(first, frames):
        top, left, h, w = face_box(*first.shape[:2])
        for f in itertools.chain([first], frames):
            crop = f[top:top + h, left:left + w]
            # The loader knows a recropped clip by its size: other sources are resized to it.
            yield crop if crop.shape[:2] == RECROPPED_SIZE else cv2.resize(crop, RECROPPED_SIZE[::-1],
                                                                          interpolation=cv2.INTER_AREA)
    try:
        frames = iter_frames(src)
        first = next(frames, None)
        if first is None:
            raise VideoReadError(f"{src}: no video frames")
        fps = video_fps(src) or 25
        out.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(str(tmp), crops(first, frames), fps=fps, gop=gop, options=RECROP_X264)
        os.replace(tmp, out)
    except VideoReadError as e:
        _remove(tmp)
        return str(e)
    except Exception as e:  # the writing side: disk full, read-only or not a folder, encoder
        _remove(tmp)
        raise RecropWriteError(f"cannot write {tmp}: {e}") from None
    return None


def _remove(path: Path):
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # e.g. a read-only file system: the rerun removes it


def _recrop_job(job):
    src, dst, gop = job
    return src, recrop_clip(src, dst, gop)


def _ignore_interrupts():
    # Ctrl-C reaches the whole process group: the main process alone decides, and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_map(fn, jobs, workers: int, desc: str):
    """(job's path, error or None) of `fn` over `jobs` in a process pool, with a progress bar.
    Leaving early (an error, Ctrl-C, SIGTERM) terminates the workers."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        # Spawned, not forked: a fork copies locks held by the caller's threads (decoder, OpenMP),
        # and a worker that needs one waits forever (seen in the test suite).
        with mp.get_context("spawn").Pool(workers, initializer=_ignore_interrupts) as pool:
            yield from tqdm(pool.imap_unordered(fn, jobs, chunksize=16), total=len(jobs), desc=desc, unit="clip")
    finally:
        signal.signal(signal.SIGTERM, previous)


def check(root: Path, clips: list[str], workers: int) -> dict[str, str]:
    paths = [str(root / c) for c in clips]
    return {os.path.relpath(path, root): err for path, err in _pool_map(decodable, paths, workers, "decode check")
            if err}


def recrop(root: Path, clips: list[str], out: Path, workers: int, gop: int = RECROP_GOP) -> dict[str, str]:
    """Recrop every clip from `root` into `out` (same relative paths); the clips that failed, with why."""
    jobs = [(str(root / c), str(out / c), gop) for c in clips]
    return {os.path.relpath(path, root): err for path, err in _pool_map(_recrop_job, jobs, workers, "recrop")
            if err}


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--check", action="store_true", help="open every clip and leave out undecodable ones")
    p.add_argument("--recrop", type=Path, metavar="DIR",
                   help="also write every clip's 160x160 face crop to DIR (see above; pre-train with --data_root DIR)")
    p.add_argument("--gop", type=int, default=RECROP_GOP, help="keyframe interval of the recropped clips")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes reading (and writing) clips in parallel")
    a = p.parse_args(argv)
    if a.gop < 1:
        raise common.LayoutError(f"--gop must be at least 1, not {a.gop}")
    if a.workers < 1:
        raise common.LayoutError(f"--workers must be at least 1, not {a.workers}")
    clips = scan(a.root)
    if not clips:
        raise common.LayoutError(f"no clips in {a.root}/dev/mp4/<speaker>/<video>/*.mp4")
    speakers = {c.split("/")[2] for c in clips}
    videos = {tuple(c.split("/")[2:4]) for c in clips}
    print(f"VoxCeleb2 dev: {len(clips)} clips, {len(videos)} videos, {len(speakers)} speakers")
    if a.check or a.recrop:
        bad = check(a.root, clips, a.workers) if a.check else {}
        if a.recrop:
            try:
                bad.update(recrop(a.root, [c for c in clips if c not in bad], a.recrop, a.workers, a.gop))
            except RecropWriteError as e:
                raise RunError(f"{e}\nnothing was listed; finished clips are kept: rerun the same "
                                      f"command to continue") from None
            except KeyboardInterrupt:
                raise RunError("stopped; finished clips are kept: rerun the same command to continue",
                                      status=130) from None
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "undecodable.txt").write_text("".join(f"{c}\t{e}\n" for c, e in sorted(bad.items())))
        print(f"{len(bad)} undecodable clip(s) left out, listed in {a.out / 'undecodable.txt'}")
        clips = [c for c in clips if c not in bad]
    common.write_splits(a.out, {"": {"train": [(c, 0) for c in clips]}}, title="pre-training list:")
    if a.recrop:
        print(f"face crops under {a.recrop}: pre-train with --data_path {a.out} --data_root {a.recrop}")


if __name__ == "__main__":
    sys.exit(run_entry(main))

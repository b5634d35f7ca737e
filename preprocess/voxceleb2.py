"""VoxCeleb2 (dev) for pre-training: scan the clips -> <out>/train.csv (`<path> 0`, no labels).

Reads, under --root:
  dev/mp4/<speaker id>/<youtube id>/<clip>.mp4   (224x224 face tracks, 25 fps)
With --check every clip is opened in a process pool and read as `python -m datasets.check` reads
it (first, middle and last frames); clips that cannot be decoded are left out and listed in
<out>/undecodable.txt, instead of relying on a fixed exclusion list. The split file is named
train.csv so that --data_path <out> works for run_pretrain.py like for fine-tuning.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from preprocess import common


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
    from datasets.check import check_sample
    return path, check_sample(path)


def check(root: Path, clips: list[str], workers: int) -> dict[str, str]:
    import multiprocessing as mp

    from tqdm import tqdm
    paths = [str(root / c) for c in clips]
    bad = {}
    # Spawned, not forked: a fork copies locks held by the caller's threads (decoder, OpenMP),
    # and a worker that needs one waits forever (seen in the test suite).
    with mp.get_context("spawn").Pool(workers) as pool:
        for path, err in tqdm(pool.imap_unordered(decodable, paths, chunksize=64), total=len(paths),
                              desc="decode check", unit="clip"):
            if err:
                bad[os.path.relpath(path, root)] = err
    return bad


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--check", action="store_true", help="open every clip and leave out undecodable ones")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    clips = scan(a.root)
    if not clips:
        raise common.LayoutError(f"no clips in {a.root}/dev/mp4/<speaker>/<video>/*.mp4")
    speakers = {c.split("/")[2] for c in clips}
    videos = {tuple(c.split("/")[2:4]) for c in clips}
    print(f"VoxCeleb2 dev: {len(clips)} clips, {len(videos)} videos, {len(speakers)} speakers")
    if a.check:
        bad = check(a.root, clips, a.workers)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "undecodable.txt").write_text("".join(f"{c}\t{e}\n" for c, e in sorted(bad.items())))
        print(f"{len(bad)} undecodable clip(s) left out, listed in {a.out / 'undecodable.txt'}")
        clips = [c for c in clips if c not in bad]
    common.write_splits(a.out, {"": {"train": [(c, 0) for c in clips]}}, title="pre-training list:")


if __name__ == "__main__":
    sys.exit(common.run(main))

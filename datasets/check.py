"""Open every sample of an annotation file and report the bad ones.

    python -m datasets.check <csv> [--data_root R] [--prefix_map OLD=NEW ...] [--full]

Each sample is opened and its first, middle and last frames decoded (the last
one catches truncated files); with --full every frame is decoded (a broken
frame in the middle of a video or a frame folder is found too, at the cost of
decoding everything). Prints one line per bad sample with the reason, then
`N ok, M bad`; exit status 0 only when M is 0 (2 for a malformed file).
"""
from __future__ import annotations

import argparse
import sys

from .annotations import AnnotationError, read_annotations
from .video_io import BACKENDS, VideoReadError, count_frames, iter_frames, read_clips


def check_sample(path: str, backend: str = "pyav", full: bool = False) -> str | None:
    """None when the sample decodes, else the reason."""
    try:
        if not full:
            read_clips(path, lambda n: [[0, n // 2, n - 1]], backend)
            return None
        expected = count_frames(path, backend)
        decoded = sum(1 for _ in iter_frames(path))
        if decoded != expected:
            return f"{path}: {decoded} of its {expected} frames decode"
    except (VideoReadError, OSError) as e:
        return str(e)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Report unreadable samples of an annotation file.")
    ap.add_argument("csv")
    ap.add_argument("--data_root", default="")
    ap.add_argument("--prefix_map", nargs="*", default=None, metavar="OLD=NEW")
    ap.add_argument("--num_classes", type=int, default=None)
    ap.add_argument("--num_targets", type=int, default=None)
    ap.add_argument("--backend", choices=BACKENDS, default="pyav")
    ap.add_argument("--full", action="store_true", help="decode every frame, not only the first, middle and last")
    args = ap.parse_args(argv)
    try:
        samples = read_annotations(args.csv, args.data_root, args.prefix_map,
                                   args.num_classes, args.num_targets)
    except (AnnotationError, OSError) as e:
        print(f"cannot read annotations: {e}")
        return 2
    bad = 0
    for s in samples:
        reason = check_sample(s.path, args.backend, args.full)
        if reason is not None:
            bad += 1
            print(f"BAD {s.path} (line {s.line}): {reason}", flush=True)
    print(f"{len(samples) - bad} ok, {bad} bad")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

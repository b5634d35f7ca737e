"""MAFW: official 5-fold single-label splits (no caption) -> <out>/splitNN/{train,test}.csv.

Reads, under --root:
  Train & Test Set/single/no_caption/set_<k>/train.txt, test.txt   k = 1..5
      space separated, no header: <id>.mp4 <label name>
  data/frames/<5-digit id>/   frame folders
Labels (index order): anger, disgust, fear, happiness, neutral, sadness, surprise, contempt,
anxiety, helplessness, disappointment (names matched case-insensitively).
Writes `data/frames/<5-digit id> <index>`; no validation split.
"""
from __future__ import annotations

import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt",
           "anxiety", "helplessness", "disappointment"]
FRAMES = "data/frames"
SETS = "Train & Test Set/single/no_caption"


def read_list(path) -> list[tuple[str, int]]:
    common.require(path, "MAFW split file")
    rows = []
    for n, line in enumerate(open(path), 1):
        parts = line.split()
        if not parts:
            continue
        stem = parts[0].rsplit(".", 1)[0] if parts[0].lower().endswith(".mp4") else parts[0]
        if len(parts) != 2 or not stem.isdigit() or parts[1].lower() not in CLASSES:
            raise common.LayoutError(f"{path}:{n}: expected '<id>.mp4 <label name>', got {line.strip()!r}")
        rows.append((f"{FRAMES}/{int(stem):05d}", CLASSES.index(parts[1].lower())))
    return rows


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--no_check_frames", action="store_true", help="do not check the frame folders exist")
    a = p.parse_args(argv)
    sets = common.require(a.root / SETS, "MAFW split folder")
    splits = {f"split{k:02d}": {part: read_list(sets / f"set_{k}" / f"{part}.txt") for part in ("train", "test")}
              for k in range(1, 6)}
    common.write_frame_splits(a, splits, CLASSES, FRAMES, "MAFW", "MAFW (11 classes, single-labelled), 5 folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

"""DFEW: official 5-fold single-label splits -> <out>/splitNN/{train,test}.csv.

Reads, under --root:
  EmoLabel_DataSplit/train(single-labeled)/set_<k>.csv   k = 1..5
  EmoLabel_DataSplit/test(single-labeled)/set_<k>.csv
      comma separated with a header: video_name,label   (video_name an integer clip id,
      label 1..7 = happy, sad, neutral, angry, surprise, disgust, fear)
  Clip/jpg_256/<5-digit id>/   frame folders (--frames_dir Clip/clip_224x224 for the 224 set)
Writes `<frames_dir>/<5-digit id> <label - 1>`; no validation split (the protocol has none).
"""
from __future__ import annotations

import csv
import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
SPLIT_DIRS = {"train": "train(single-labeled)", "test": "test(single-labeled)"}


def read_set(path, frames_dir: str) -> list[tuple[str, int]]:
    common.require(path, "DFEW split file")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["video_name", "label"]:
            raise common.LayoutError(f"{path}: expected header 'video_name,label', got {header}")
        rows = []
        for line in reader:
            if not line:
                continue
            try:
                vid, label = int(line[0]), int(line[1])
            except (ValueError, IndexError):
                raise common.LayoutError(f"{path}: bad line {line}") from None
            if not 1 <= label <= 7:
                raise common.LayoutError(f"{path}: label {label} outside 1..7")
            rows.append((f"{frames_dir}/{vid:05d}", label - 1))
    return rows


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--frames_dir", default="Clip/jpg_256", help="frame folders, relative to --root")
    p.add_argument("--no_check_frames", action="store_true", help="do not check the frame folders exist")
    a = p.parse_args(argv)
    ann = common.require(a.root / "EmoLabel_DataSplit", "DFEW annotation folder")
    splits = {}
    for k in range(1, 6):
        splits[f"split{k:02d}"] = {part: read_set(ann / d / f"set_{k}.csv", a.frames_dir)
                                   for part, d in SPLIT_DIRS.items()}
    common.write_frame_splits(a, splits, CLASSES, a.frames_dir, "DFEW", "DFEW, 5 folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

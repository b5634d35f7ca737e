"""FERV39k: official All-scenes train/test -> <out>/{train,test}.csv.

Reads, under --root:
  4_setups/All_scenes/train_All.csv, test_All.csv
      space separated, no header: <scene>/<Emotion>/<id> <Emotion>
  2_ClipsforFaceCrop/<scene>/<Emotion>/<id>/   frame folders
Emotions (index order): Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear.
Writes `2_ClipsforFaceCrop/<scene>/<Emotion>/<id> <index>`; no validation split.
"""
from __future__ import annotations

import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = ["Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear"]
FRAMES = "2_ClipsforFaceCrop"


def read_list(path) -> list[tuple[str, int]]:
    common.require(path, "FERV39k setup file")
    rows = []
    for n, line in enumerate(open(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in CLASSES or parts[0].count("/") != 2:
            raise common.LayoutError(f"{path}:{n}: expected '<scene>/<Emotion>/<id> <Emotion>', got {line.strip()!r}")
        rows.append((f"{FRAMES}/{parts[0]}", CLASSES.index(parts[1])))
    return rows


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--no_check_frames", action="store_true", help="do not check the frame folders exist")
    a = p.parse_args(argv)
    setup = common.require(a.root / "4_setups" / "All_scenes", "FERV39k setup folder")
    split = {"train": read_list(setup / "train_All.csv"), "test": read_list(setup / "test_All.csv")}
    common.write_frame_splits(a, {"": split}, CLASSES, FRAMES, "FERV39k", "FERV39k, official split:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

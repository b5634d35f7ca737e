"""RAVDESS: video-only speech clips -> face crops -> 6 actor folds, <out>/splitNN/{train,test}.csv.

Reads, under --root:
  Actor_<nn>/<modality>-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>.mp4
Keeps video-only (modality 02) speech (channel 01) files. Emotion field 01..08 = neutral, calm,
happy, sad, angry, fearful, disgust, surprised -> 0..7. Folds by actor: 1-4, 5-8, ..., 21-24.
Split files point to the face crops `<face_dir>/Actor_<nn>/<file stem>` (default face_aligned),
which --crop writes; no validation split.
"""
from __future__ import annotations

import re
import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
FOLDS = [range(a, a + 4) for a in range(1, 25, 4)]
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def main(argv=None):
    p = common.parser(__doc__)
    common.add_crop_args(p, "face_aligned")
    a = p.parse_args(argv)
    actors = sorted(d for d in a.root.glob("Actor_*") if d.is_dir())
    if not actors:
        raise common.LayoutError(f"no Actor_<nn> folders in {a.root}")
    rels, fields = [], {}
    for d in actors:
        for f in sorted(d.glob("*.mp4")):
            m = NAME.match(f.stem)
            if not m:
                print(f"warning: skipping {f.name} (not a 7-field RAVDESS name)")
                continue
            modality, channel, emotion, *_, actor = m.groups()
            if modality == "02" and channel == "01":
                if not 1 <= int(emotion) <= 8:
                    raise common.LayoutError(f"{f}: emotion field {emotion} outside 01..08")
                rel = f"{d.name}/{f.name}"
                rels.append(rel)
                fields[rel] = (int(actor), int(emotion) - 1)
    if not rels:
        raise common.LayoutError(f"no video-only speech clips (02-01-*.mp4) under {a.root}/Actor_*")
    path_of, bad = common.sample_paths(a.root, rels, a)
    samples = [(fields[r][0], (path_of[r], fields[r][1])) for r in rels if r not in bad]
    common.write_group_splits(a.out, samples, FOLDS, CLASSES, "actors", "RAVDESS, 6 actor folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

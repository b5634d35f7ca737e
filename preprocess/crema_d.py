"""CREMA-D: raw videos -> face crops -> 5 actor-independent folds, <out>/splitNN/{train,test}.csv.

Reads, under --root:
  VideoFlash/<actor>_<sentence>_<emotion>_<level>.flv   e.g. 1001_DFA_ANG_XX.flv
Emotion from the file name (index order): ANG, DIS, FEA, HAP, NEU, SAD.
Folds by actor: 1001-1018, 1019-1036, 1037-1054, 1055-1072, 1073-1091.
Split files point to the face crops `<face_dir>/<file stem>` (default face_aligned/...), which
--crop writes (python -m preprocess.face_crop does the same); no validation split.
"""
from __future__ import annotations

import re
import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
FOLDS = [range(1001, 1019), range(1019, 1037), range(1037, 1055), range(1055, 1073), range(1073, 1092)]
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def face_name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def main(argv=None):
    p = common.parser(__doc__)
    common.add_crop_args(p, "face_aligned")
    a = p.parse_args(argv)
    vdir = common.require(a.root / "VideoFlash", "CREMA-D video folder")
    videos, stray = [], []
    for f in sorted(vdir.glob("*.flv")):
        m = NAME.match(f.stem)
        (videos if m and m.group(3) in CLASSES else stray).append(f)
    if stray:
        print(f"warning: {len(stray)} file(s) not named <actor>_<sentence>_<emotion>_<level>.flv skipped, "
              f"e.g. {[s.name for s in stray[:3]]}")
    if not videos:
        raise common.LayoutError(f"no <actor>_<sentence>_<emotion>_<level>.flv files in {vdir}")
    rels = [f"VideoFlash/{f.name}" for f in videos]
    path_of, bad = common.sample_paths(a.root, rels, a, face_name)
    samples = []
    for rel in rels:
        if rel in bad:
            continue
        actor, _, emo, _ = NAME.match(face_name(rel)).groups()
        samples.append((int(actor), (path_of[rel], CLASSES.index(emo))))
    common.write_group_splits(a.out, samples, FOLDS, CLASSES, "actors", "CREMA-D, 5 actor folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

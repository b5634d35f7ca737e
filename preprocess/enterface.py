"""eNTERFACE'05: raw videos -> face crops -> 5 subject folds, <out>/splitNN/{train,test}.csv.

Reads, under --root:
  subject <n>/<emotion>/sentence <m>/<name>.avi
Folder names vary in spacing and case in the official release ("subject 1", "Subject_1", ...):
they are normalised to lower case with '_' for blanks (subject_1/anger/sentence_1); file stems
are kept as they are. The emotion comes from the folder (index order): anger, disgust, fear,
happiness, sadness, surprise. Folds by subject: 1-10, 11-19, 20-28, 29-37, 38-44. Subject 6 is
left out by default (--exclude_subjects), as in the reference splits of MAE-DFER/SVFAP.
Split files point to the face crops `<face_dir>/<normalised path>/<stem>` (default
face_aligned), which --crop writes; no validation split.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from engine.cli import run_entry
from preprocess import common

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
FOLDS = [range(1, 11), range(11, 20), range(20, 29), range(29, 38), range(38, 45)]
SUBJECT = re.compile(r"^subject[\s_]*(\d+)$", re.I)


def norm(part: str) -> str:
    part = re.sub(r"[\s_]+", "_", part.strip()).lower()
    return re.sub(r"^(subject|sentence)_?(\d+)$", r"\1_\2", part)


def face_name(rel: str) -> str:
    *dirs, name = Path(rel).parts
    return "/".join([norm(d) for d in dirs] + [Path(name).stem])


def main(argv=None):
    p = common.parser(__doc__)
    common.add_crop_args(p, "face_aligned")
    p.add_argument("--exclude_subjects", type=int, nargs="*", default=[6])
    a = p.parse_args(argv)
    subjects = [d for d in a.root.iterdir() if d.is_dir() and SUBJECT.match(d.name)] if a.root.is_dir() else []
    if not subjects:
        raise common.LayoutError(f"no 'subject <n>' folders in {a.root}")
    rels, info = [], {}
    for d in sorted(subjects, key=lambda d: int(SUBJECT.match(d.name).group(1))):
        subject = int(SUBJECT.match(d.name).group(1))
        if subject in a.exclude_subjects:
            continue
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() != ".avi" or not f.is_file():
                continue
            rel = f.relative_to(a.root).as_posix()
            emotion = norm(f.relative_to(d).parts[0])
            if emotion not in CLASSES:
                raise common.LayoutError(f"{f}: first folder under the subject must be one of {CLASSES}")
            rels.append(rel)
            info[rel] = (subject, CLASSES.index(emotion))
    if not rels:
        raise common.LayoutError(f"no .avi files under {a.root}/subject */")
    path_of, bad = common.sample_paths(a.root, rels, a, face_name)
    samples = [(info[r][0], (path_of[r], info[r][1])) for r in rels if r not in bad]
    common.write_group_splits(a.out, samples, FOLDS, CLASSES, "subjects", "eNTERFACE'05, 5 subject folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

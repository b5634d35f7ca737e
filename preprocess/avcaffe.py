"""AVCAffe: self-reported arousal and valence (5 classes each) -> <out>/{arousal,valence}/{train,test}.csv.

Reads, under --root (the layout of the AVCAffe public release):
  videos/shorter_segments/<subject>/<task>/<clip>.avi      e.g. aiim001/task_1/..., 6-second clips
  ground_truths/arousal.txt, ground_truths/valence.txt
      one line per task video, comma separated, no header: <subject>_<task>,<class>
      e.g. 'aiim001_task_1,Excited'. <class> is a name or its index 0-4:
        arousal: Excited, Wide-awake, Neutral, Dull, Calm           -> 0..4
        valence: Pleasant, Pleased, Neutral, Unsatisfied, Unpleasant -> 0..4
Every clip takes the label of its task video. Official split: the 20 test subjects below
(--test_subjects), the other 86 train; no validation split. A video's score is the mean over its
clips, so the evaluation groups clips by their folder <subject>/<task>.
With --face_dir/--crop the split files point to face crops instead of the raw clips.
"""
from __future__ import annotations

import sys

from engine.cli import run_entry
from preprocess import common

CLASSES = {
    "arousal": ["Excited", "Wide-awake", "Neutral", "Dull", "Calm"],
    "valence": ["Pleasant", "Pleased", "Neutral", "Unsatisfied", "Unpleasant"],
}
TEST_SUBJECTS = ["aiim001", "aiim002", "aiim013", "aiim014", "aiim043", "aiim044", "aiim053", "aiim054",
                 "aiim057", "aiim058", "aiim063", "aiim064", "aiim067", "aiim068", "aiim077", "aiim078",
                 "aiim099", "aiim100", "aiim107", "aiim108"]
CLIPS = "videos/shorter_segments"


def read_labels(path, names: list[str]) -> dict[str, int]:
    common.require(path, "AVCAffe label file")
    lower = [n.lower() for n in names]
    out = {}
    for n, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        parts = [s.strip() for s in line.split(",")]
        if len(parts) != 2:
            raise common.LayoutError(f"{path}:{n}: expected '<subject>_<task>,<class>', got {line.strip()!r}")
        key, val = parts
        if val.lower() in lower:
            out[key] = lower.index(val.lower())
        elif val.isdigit() and int(val) < len(names):
            out[key] = int(val)
        else:
            raise common.LayoutError(f"{path}:{n}: class {val!r} is not one of {names} or 0-4")
    return out


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--test_subjects", nargs="+", default=TEST_SUBJECTS)
    common.add_crop_args(p, None)
    a = p.parse_args(argv)
    base = common.require(a.root / CLIPS, "AVCAffe clip folder")
    labels = {t: read_labels(a.root / "ground_truths" / f"{t}.txt", c) for t, c in CLASSES.items()}
    clips = sorted(f.relative_to(a.root).as_posix() for f in base.glob("*/*/*.avi"))
    if not clips:
        raise common.LayoutError(f"no clips in {base}/<subject>/<task>/*.avi")
    path_of, bad = common.sample_paths(a.root, clips, a)
    for target, table in labels.items():
        split = {"train": [], "test": []}
        unlabelled = set()
        for c in clips:
            subject, task = c.split("/")[2:4]
            key = f"{subject}_{task}"
            if key not in table:
                unlabelled.add(key)
            elif c not in bad:
                split["test" if subject in a.test_subjects else "train"].append((path_of[c], table[key]))
        if unlabelled:
            raise common.LayoutError(f"{len(unlabelled)} task video(s) without a {target} label in "
                                     f"ground_truths/{target}.txt, e.g. {sorted(unlabelled)[:3]}")
        subjects = {part: len({r[0].split('/')[-3] for r in rows}) for part, rows in split.items()}
        print(f"{target}: " + ", ".join(f"{i} {n}" for i, n in enumerate(CLASSES[target]))
              + f"; subjects train {subjects['train']}, test {subjects['test']}")
        common.write_splits(a.out / target, {"": split}, title=f"AVCAffe {target}, official split:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

"""ChaLearn First Impressions (2016): Big Five regression -> <out>/{train,val,test}.csv.

Reads, under --root (or --annotation_dir):
  annotation_training.pkl, annotation_validation.pkl, annotation_test.pkl
      pickled dicts: trait -> {video file name -> score in [0, 1]}, traits 'openness',
      'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism' (the extra
      'interview' key is ignored)
and finds every annotated video (<name>.mp4) anywhere under --root (the official archives unpack
into nested folders); a video name must be unique there.
Writes `<path> <O> <C> <E> <A> <N>` (that target order) for the official 6,000/2,000/2,000 split.
"""
from __future__ import annotations

import os
import pickle
import sys

from engine.cli import run_entry
from preprocess import common

TRAITS = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, strings and numbers only: a pickle naming any class or function (which
    plain `pickle.load` would import and call) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: an annotation file holds only "
                                     f"dicts of names and scores")
FILES = {"train": "annotation_training.pkl", "val": "annotation_validation.pkl", "test": "annotation_test.pkl"}


def load(path) -> dict[str, list[float]]:
    common.require(path, "First Impressions annotation file")
    try:
        with open(path, "rb") as f:
            d = _PlainData(f, encoding="latin1").load()  # the official files are Python 2 pickles
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise common.LayoutError(f"{path}: not a First Impressions annotation file ({e})") from e
    if not isinstance(d, dict) or any(t not in d for t in TRAITS):
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise common.LayoutError(f"{path}: expected a dict with keys {TRAITS} (+ 'interview'), got {keys}")
    names = set(d[TRAITS[0]])
    for t in TRAITS[1:]:
        if set(d[t]) != names:
            raise common.LayoutError(f"{path}: traits {TRAITS[0]} and {t} annotate different videos")
    out = {}
    for n in sorted(names):
        scores = [float(d[t][n]) for t in TRAITS]
        if not all(0.0 <= s <= 1.0 for s in scores):
            raise common.LayoutError(f"{path}: {n} has a score outside [0, 1]: {scores}")
        out[n] = scores
    return out


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--annotation_dir", type=common.Path, default=None, help="default: --root")
    a = p.parse_args(argv)
    common.require(a.root, "First Impressions root")
    ann = {part: load((a.annotation_dir or a.root) / f) for part, f in FILES.items()}
    where: dict[str, list[str]] = {}
    for dirpath, _, files in os.walk(a.root):
        for f in files:
            if f.endswith(".mp4"):
                where.setdefault(f, []).append(os.path.relpath(os.path.join(dirpath, f), a.root))
    splits = {"": {}}
    for part, labels in ann.items():
        missing = [n for n in labels if n not in where]
        dup = [n for n in labels if len(where.get(n, [])) > 1]
        if missing or dup:
            raise common.LayoutError(f"{part}: {len(missing)} annotated video(s) not found under {a.root} "
                                     f"(e.g. {missing[:3]}), {len(dup)} found more than once (e.g. {dup[:3]})")
        splits[""][part] = [(where[n][0], *labels[n]) for n in sorted(labels)]
    print("targets: " + ", ".join(TRAITS))
    common.write_splits(a.out, splits, title="First Impressions, official split:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

"""Werewolf-XL: arousal/valence/dominance regression, 5 session-independent folds.

The annotation format of the release is not public, so this script reads one explicit table,
--annotations (default <root>/annotations.csv): comma separated, with a header, one row per
clip, and at least these columns (names changeable with the options in brackets):
  clip        path of the clip (video file or frame folder) relative to --root  [--clip_column]
  session     game session the clip comes from                                 [--session_column]
  arousal, valence, dominance   numeric targets                                [--target_columns]
Other columns are ignored. Folds: by default the sessions, in natural sort order, are cut into
5 contiguous near-equal groups; --folds_file gives '<session> <fold 1-5>' lines instead.
Writes <out>/splitNN/{train,test}.csv with `<clip> <arousal> <valence> <dominance>`.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from engine.cli import run_entry
from preprocess import common


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--annotations", type=Path, default=None, help="default: <root>/annotations.csv")
    p.add_argument("--clip_column", default="clip")
    p.add_argument("--session_column", default="session")
    p.add_argument("--target_columns", nargs="+", default=["arousal", "valence", "dominance"])
    p.add_argument("--folds_file", type=Path, default=None)
    p.add_argument("--n_folds", type=int, default=5)
    a = p.parse_args(argv)
    path = common.require(a.annotations or a.root / "annotations.csv", "Werewolf-XL annotation table")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = [a.clip_column, a.session_column, *a.target_columns]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise common.LayoutError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        samples = []
        for n, row in enumerate(reader, 2):
            try:
                y = [float(row[c]) for c in a.target_columns]
            except ValueError:
                raise common.LayoutError(f"{path}:{n}: non-numeric target in {row}") from None
            if not all(map(math.isfinite, y)):
                raise common.LayoutError(f"{path}:{n}: non-finite target in {row}")
            clip = row[a.clip_column].strip()
            if not (a.root / clip).exists():
                raise common.LayoutError(f"{path}:{n}: clip {clip!r} not found under {a.root}")
            samples.append((row[a.session_column].strip(), (clip, *y)))
    if not samples:
        raise common.LayoutError(f"{path}: no rows")
    sessions = {s for s, _ in samples}
    if a.folds_file:
        fold = {}
        for line in open(a.folds_file):
            if line.strip():
                s, k = line.split()
                fold[s] = int(k)
        folds = [[s for s in fold if fold[s] == k] for k in range(1, a.n_folds + 1)]
    else:
        folds = common.chunk_folds(sessions, a.n_folds)
    print(f"{len(samples)} clips from {len(sessions)} sessions; targets: {', '.join(a.target_columns)}")
    for k, f in enumerate(folds, 1):
        print(f"  fold {k} test sessions: {' '.join(map(str, f))}")
    common.write_splits(a.out, common.group_folds(samples, folds), title="Werewolf-XL, session folds:")


if __name__ == "__main__":
    sys.exit(run_entry(main))

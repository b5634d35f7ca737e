"""What every dataset script shares: CLI boilerplate, layout checks, fold splitting, CSV writing.
Errors end a script with one ``error:`` line and an exit status through ``engine.cli.run_entry``.

Split files hold one sample a line, space separated, no header:
    <path relative to the dataset root> <label>            (categorical, integer index)
    <path relative to the dataset root> <y1> ... <yK>      (regression / several targets)
Folded protocols write <out>/splitNN/{train,test}.csv; single-split ones write <out>/{train,val,test}.csv.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from datasets.video_io import natural_key
from engine.cli import RunError, UserError
from preprocess import face_crop

Row = tuple  # (relative path, label, ...)
Splits = dict  # {"" or "splitNN": {"train": [Row], "val": [...], "test": [...]}}


class LayoutError(UserError):
    """The dataset root does not look like the official layout the script reads (exit status 2)."""


def parser(doc: str, *, root_help: str = "official dataset root") -> argparse.ArgumentParser:
    # The module docstring is the --help text, so the files and columns a script reads are
    # documented in exactly one place.
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help=root_help)
    p.add_argument("--out", required=True, type=Path, help="folder for the split files")
    return p


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise LayoutError(f"{what} not found: {path}")
    return path


def group_folds(samples: Iterable[tuple[object, Row]], folds: Sequence[Iterable[object]]) -> Splits:
    """Leave-one-group-set-out splits: fold k tests on the groups in folds[k], trains on the rest.

    `samples` are (group, row) pairs; a group in no fold (e.g. an excluded subject) is left out
    of every split, and reported.
    """
    fold_of = {}
    for k, groups in enumerate(folds):
        for g in groups:
            if g in fold_of:
                raise ValueError(f"group {g!r} is in folds {fold_of[g] + 1} and {k + 1}")
            fold_of[g] = k
    per_fold: list[list[Row]] = [[] for _ in folds]
    left_out = set()
    for g, row in samples:
        if g in fold_of:
            per_fold[fold_of[g]].append(row)
        else:
            left_out.add(g)
    if left_out:
        print(f"note: {len(left_out)} group(s) in no fold, left out: {sorted(left_out, key=natural_key)}")
    out = {}
    for k in range(len(folds)):
        train = [r for j, rows in enumerate(per_fold) if j != k for r in rows]
        out[f"split{k + 1:02d}"] = {"train": train, "test": per_fold[k]}
    return out


def chunk_folds(groups: Iterable[object], n_folds: int) -> list[list[object]]:
    """Sorted groups cut into n contiguous, near-equal folds (deterministic, documented)."""
    groups = sorted(set(groups), key=natural_key)
    if len(groups) < n_folds:
        raise LayoutError(f"{len(groups)} groups cannot make {n_folds} folds")
    size, extra = divmod(len(groups), n_folds)
    out, i = [], 0
    for k in range(n_folds):
        n = size + (1 if k < extra else 0)
        out.append(groups[i:i + n])
        i += n
    return out


def _fmt(v) -> str:
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return str(v)
    return f"{float(v):.6g}"


def write_csv(path: Path, rows: Iterable[Row]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w") as f:
        for row in rows:
            rel = str(row[0])
            if not rel or any(c.isspace() for c in rel) or os.path.isabs(rel):
                # The format is space separated and relative to a root the user passes.
                raise LayoutError(f"path {rel!r} is empty, absolute or contains whitespace")
            f.write(" ".join([rel] + [_fmt(v) for v in row[1:]]) + "\n")
            n += 1
    return n


def write_splits(out: Path, splits: Splits, *, title: str = "") -> None:
    """Write every split and print its counts; an empty train or test split is an error."""
    for name, parts in splits.items():
        for part in ("train", "test"):
            if part in parts and not parts[part]:
                raise LayoutError(f"{name or 'split'}/{part} would be empty: check the layout under --root")
    if title:
        print(title)
    for name, parts in splits.items():
        counts = []
        for part, rows in parts.items():
            n = write_csv(out / name / f"{part}.csv", rows)
            counts.append(f"{part} {n}")
        print(f"  {name or '.'}: " + ", ".join(counts))
    print(f"wrote split files under {out}")


def print_label_map(names: Sequence[str]) -> None:
    print("labels: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))


def write_frame_splits(a, splits: Splits, classes: Sequence[str], frames: str, name: str, title: str) -> None:
    """Splits of frame-folder datasets: the folders they name must exist under `a.root/frames`
    (unless `--no_check_frames`); then the label map and the split files."""
    if not a.no_check_frames:
        require(a.root / frames, f"{name} frame folder")
        check_dirs_exist(a.root, {r[0] for s in splits.values() for rows in s.values() for r in rows},
                         f"{name} frame folders")
    print_label_map(classes)
    write_splits(a.out, splits, title=title)


def write_group_splits(out: Path, samples, folds, classes: Sequence[str], groups: str, title: str) -> None:
    """Leave-group-out splits (actors, subjects): the label map, the counts, the split files."""
    print_label_map(classes)
    print(f"{len(samples)} clips from {len({g for g, _ in samples})} {groups}")
    write_splits(out, group_folds(samples, folds), title=title)


def check_dirs_exist(root: Path, rels: Iterable[str], what: str) -> None:
    missing = [r for r in rels if not (root / r).is_dir()]
    if missing:
        raise LayoutError(f"{len(missing)} {what} missing under {root}, e.g. {missing[:3]}")


def add_crop_args(p: argparse.ArgumentParser, default_face_dir: str | None) -> None:
    """Options of the datasets that come as raw videos and need face cropping."""
    g = p.add_argument_group("face cropping")
    g.add_argument("--face_dir", default=default_face_dir,
                   help="folder under --root where face crops are (or will be) written; the split "
                        f"files point into it (default: {default_face_dir!r}; '' = raw videos)")
    g.add_argument("--crop", action="store_true",
                   help="run face cropping now (resumable) and leave out videos with no face")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    g.add_argument("--size", type=int, default=224, help="crop side in pixels")
    g.add_argument("--format", choices=("jpg", "mp4"), default="jpg",
                   help="frame folders (jpg) or one mp4 per video")


def sample_paths(root: Path, videos: Sequence[str], args,
                 name_of: Callable[[str], str] | None = None) -> tuple[dict[str, str], set[str]]:
    """Map each video (relative to root) to the path the split files name, cropping if asked.

    The crop of `a/b/clip.ext` is `<face_dir>/<face_name(a/b/clip.ext)>`, a frame folder (or
    `.mp4`), so split files and the cropping step always agree on names. Returns the map and
    the set of videos to leave out (no face found or unreadable).
    """
    name_of = name_of or (lambda rel: str(Path(rel).with_suffix("")))
    if not args.face_dir:
        return {v: v for v in videos}, set()
    suffix = ".mp4" if args.format == "mp4" else ""
    mapping = {v: f"{args.face_dir}/{name_of(v)}{suffix}" for v in videos}
    bad: set[str] = set()
    if args.crop:
        cfg = face_crop.CropConfig(size=args.size, fmt=args.format)
        jobs = [(str(root / v), str(root / args.face_dir / name_of(v))) for v in videos]
        results = face_crop.crop_videos(jobs, cfg, workers=args.workers,
                                        report=root / args.face_dir / "face_crop_report.json")
        unwritten = [r for r in results if r["status"] == "write_error"]
        if unwritten:  # the videos are fine: leaving them out would shrink the splits for a disk's sake
            raise RunError(f"{len(unwritten)} face crop(s) could not be written ({unwritten[0]['error']}); no split "
                           f"file was written: free space (or fix the folder) and rerun, the crops done are kept")
        for v, r in zip(videos, results):
            if r["status"] not in ("ok", "done"):
                bad.add(v)
        if bad:
            print(f"warning: {len(bad)} video(s) left out of the splits (no face or unreadable), "
                  f"listed in {root / args.face_dir / 'face_crop_report.json'}")
    elif not (root / args.face_dir).is_dir():
        print(f"note: {root / args.face_dir} does not exist yet; the split files point to face crops "
              "that --crop (or python -m preprocess.face_crop) will write there")
    return mapping, bad

"""Pool the test predictions of every fold and compute a dataset's overall metrics, as the paper does.

    python -m engine.pool_folds --data_set DFEW --pred_dirs out/fold1 out/fold2 ... [--output_dir out/pooled]

Every fold's pred.csv must hold the dataset's classes (or targets), in its order, and each video
may appear in one fold only. Without --data_set the classes are read from the pred.csv files. A
pred.csv must be the one its metrics.json was written with (its row count and sha256): one cut
short by a full disk or edited since is refused.
"""
import argparse
import hashlib
import json
import os
import sys

import pandas as pd

from datasets.registry import DatasetInfo, get_dataset_info

from .cli import UserError, run_entry
from .metrics import finite_metrics
from .reports import format_table, metrics_from_frame, write_reports

TASKS = ("classification", "regression", "clip_classification")


def check_written(path, data):
    """``data`` (pred.csv's bytes) must be whole and what its metrics.json records."""
    if data and not data.endswith(b"\n"):
        raise UserError(f"{path} ends in the middle of a row: it was cut short; run the fold's --eval again")
    beside = os.path.join(os.path.dirname(path), os.path.basename(path).replace("pred.csv", "metrics.json"))
    try:
        with open(beside, encoding="utf-8") as f:
            recorded = (json.load(f).get("provenance") or {}).get("pred_csv")
    except (OSError, ValueError):
        recorded = None
    if not recorded:
        print(f"WARNING: {path} has no metrics.json with its row count and sha256 beside it: it cannot be checked")
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest != recorded["sha256"]:
        rows = max(data.count(b"\n") - 1, 0)
        raise UserError(f"{path} is not the pred.csv its metrics.json was written with ({rows} rows, sha256 "
                        f"{digest[:12]} now; {recorded['rows']} rows, sha256 {recorded['sha256'][:12]} recorded): it "
                        f"was cut or changed since; run the fold's --eval again")


def read_fold(path):
    path = path if path.endswith(".csv") else os.path.join(path, "pred.csv")
    if not os.path.isfile(path):
        raise UserError(f"no predictions at {path}: run the fold's --eval first")
    with open(path, "rb") as f:
        check_written(path, f.read())
    try:
        return path, pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a pred.csv written by run_finetune.py: {e}") from e


def columns_of(frame):
    """``(task kind, output names)`` a pred.csv holds: score_<class> or target_/pred_<target> columns."""
    if "prediction" in frame.columns:
        return "classification", [c[len("score_"):] for c in frame.columns if c.startswith("score_")]
    if any(c.startswith("pred_") for c in frame.columns):
        return "regression", [c[len("pred_"):] for c in frame.columns if c.startswith("pred_")]
    return None, []


def check_fold(path, frame, info):
    kind, names = columns_of(frame)
    want_kind = "regression" if info.task == "regression" else "classification"
    want = list(info.classes or info.targets)
    if kind is None or "id" not in frame.columns:
        raise UserError(f"{path} is not a pred.csv written by run_finetune.py (columns: {', '.join(frame.columns)})")
    if kind != want_kind:
        raise UserError(f"{path} holds {kind} predictions, but {info.name} is a {want_kind} task")
    if names != want:
        what = "classes" if want_kind == "classification" else "targets"
        raise UserError(f"{path} has {len(names)} {what} ({', '.join(names)}), but {info.name} has {len(want)} "
                        f"({', '.join(want)}): pool with the --data_set (or --nb_classes) these predictions were "
                        f"made for")


def named_like(path, frame, info=None):
    """A dataset entry with the outputs ``frame`` names (as many as ``info`` has, if given)."""
    kind, names = columns_of(frame)
    if kind is None:
        raise UserError(f"{path} is not a pred.csv written by run_finetune.py")
    if info is not None and len(names) != info.num_outputs:
        raise UserError(f"{path} has {len(names)} outputs ({', '.join(names)}), but --nb_classes says {info.num_outputs}")
    return DatasetInfo(info.name if info else "pooled", kind, classes=tuple(names) if kind == "classification" else (),
                       targets=tuple(names) if kind == "regression" else ())


def pool(pred_dirs, info=None):
    """Pooled frame, metrics and names; ``info`` None reads the classes from the first pred.csv."""
    paths = [os.path.realpath(d if d.endswith(".csv") else os.path.join(d, "pred.csv")) for d in pred_dirs]
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise UserError(f"the same fold is given more than once: {', '.join(repeated)}")
    frames = []
    for d in pred_dirs:
        path, frame = read_fold(d)
        if not frames and (info is None or info.name == "custom"):
            # The classes the first fold's predictions were named with (a custom dataset's are
            # placeholders); every other fold must have the same.
            info = named_like(path, frame, info)
        check_fold(path, frame, info)
        frames.append(frame.assign(fold=os.path.basename(os.path.dirname(os.path.abspath(path)))))
    frame = pd.concat(frames, ignore_index=True)
    twice = frame[frame["id"].duplicated(keep=False)]
    if len(twice):
        folds = sorted(set(twice["fold"]))
        raise UserError(f"{twice['id'].nunique()} video(s) appear in more than one fold ({', '.join(folds)}), e.g. "
                        f"{twice['id'].iloc[0]}: cross-validation folds test disjoint videos")
    names = list(info.classes or info.targets)
    task = "regression" if info.task == "regression" else "classification"
    return frame, metrics_from_frame(frame, task, names), names, info


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_set", default=None, help="registered dataset name, or custom (default: the classes of "
                                                    "the pred.csv files)")
    p.add_argument("--nb_classes", type=int, default=None, help="classes (targets) of --data_set custom")
    p.add_argument("--task", default=None, choices=TASKS, help="task of --data_set custom")
    p.add_argument("--pred_dirs", nargs="+", required=True, help="fold output folders (or pred.csv files)")
    p.add_argument("--output_dir", default=None, help="write pooled pred.csv, metrics.json and plots here")
    args = p.parse_args(argv)
    info = get_dataset_info(args.data_set, args.nb_classes, args.task) if args.data_set else None
    frame, metrics, names, info = pool(args.pred_dirs, info)
    metrics["folds"] = len(args.pred_dirs)
    print(format_table(metrics, info.task, f"== {info.name}: {len(args.pred_dirs)} folds pooled, "
                                           f"{len(frame)} videos =="))
    if args.output_dir:
        from models.tuning import sha256_file
        folds = [d if d.endswith(".csv") else os.path.join(d, "pred.csv") for d in args.pred_dirs]
        write_reports(args.output_dir, frame, metrics, info.task, names, provenance={
            "pooled": [{"pred_csv": os.path.abspath(p), "sha256": sha256_file(p)} for p in folds],
            "args": vars(args)})
    else:
        summary = {k: v for k, v in finite_metrics(metrics).items() if not isinstance(v, (list, dict))}
        json.dump(summary, sys.stdout, indent=2, allow_nan=False)
        print()
    return 0


def main(argv=None):
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

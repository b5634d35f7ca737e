"""A cross-validation's totals: the metrics of all folds' test predictions pooled (the paper's
protocol), and the mean +- std of the per-fold metrics (the release README's "Total" rows).

    python -m engine.pool_folds --data_set DFEW --pred_dirs out/split01/eval ... [--output_dir out/pooled]

Every fold's pred.csv must hold the dataset's classes (or targets), in its order, and each video
may appear in one fold only. Without --data_set the classes are read from the pred.csv files. A
fold is named by the last part of its folder's path that tells it from the others (split01 for
out/split01/eval), or by --fold_names; the pooled pred.csv names each row's fold.
Each pred.csv must be the one its metrics.json was written with (its row count and sha256): one cut
short by a full disk or edited since is refused.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import pandas as pd

from datasets.registry import DatasetInfo, get_dataset_info

from .cli import UserError, run_entry
from .metrics import finite_metrics, summary_keys
from .reports import format_table, metrics_from_frame, write_reports

TASKS = ("classification", "regression", "clip_classification")
TOTALS = ("the metrics at the top level are computed over the pooled predictions of all folds (the paper's "
          "protocol); fold_mean and fold_std are the mean and standard deviation (n - 1) of the per-fold metrics "
          "(the release README's totals)")


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


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def fold_names(paths):
    """The last component of each pred.csv's folder that differs between the folds."""
    parts = [os.path.dirname(os.path.abspath(p)).split(os.sep) for p in paths]
    while len(parts) > 1 and all(len(p) > 1 for p in parts) and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    return [p[-1] for p in parts]


def pool(pred_dirs, info=None, names_of_folds=None):
    """Pooled frame (with each row's ``fold``), metrics and names; ``info`` None reads the classes
    from the first pred.csv."""
    paths = [os.path.realpath(d if d.endswith(".csv") else os.path.join(d, "pred.csv")) for d in pred_dirs]
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise UserError(f"the same fold is given more than once: {', '.join(repeated)}")
    names_of_folds = names_of_folds or fold_names(paths)
    if len(names_of_folds) != len(pred_dirs) or len(set(names_of_folds)) != len(names_of_folds):
        raise UserError(f"--fold_names needs one distinct name per fold ({len(pred_dirs)}), not "
                        f"{' '.join(names_of_folds)}")
    frames = []
    for d, fold in zip(pred_dirs, names_of_folds):
        path, frame = read_fold(d)
        if not frames and (info is None or info.name == "custom"):
            # The classes the first fold's predictions were named with (a custom dataset's are
            # placeholders); every other fold must have the same.
            info = named_like(path, frame, info)
        check_fold(path, frame, info)
        frames.append(frame.assign(fold=fold))
    frame = pd.concat(frames, ignore_index=True)
    twice = frame[frame["id"].duplicated(keep=False)]
    if len(twice):
        folds = sorted(set(twice["fold"]))
        raise UserError(f"{twice['id'].nunique()} video(s) appear in more than one fold ({', '.join(folds)}), e.g. "
                        f"{twice['id'].iloc[0]}: cross-validation folds test disjoint videos")
    names = list(info.classes or info.targets)
    task = "regression" if info.task == "regression" else "classification"
    return frame, metrics_from_frame(frame, task, names), names, info


def per_fold(frame, info, names):
    """``{fold: metrics}`` of each fold on its own, and the mean and std (n - 1) over the folds of
    the summary metrics (no std for one fold)."""
    task = "regression" if info.task == "regression" else "classification"
    folds = {fold: metrics_from_frame(part, task, names) for fold, part in frame.groupby("fold", sort=False)}
    keys = summary_keys(info.task)
    values = {k: [m[k] for m in folds.values()] for k in keys}
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in values.items()}
    return folds, mean, std


def fold_table(folds, mean, std, task, title):
    keys = summary_keys(task)
    width = max(len("mean +- std"), *(len(f) for f in folds))
    lines = [title, f"{'':<{width}}  " + "  ".join(f"{k:>15}" for k in keys)]
    for fold, m in folds.items():
        lines.append(f"{fold:<{width}}  " + "  ".join(f"{m[k]:>15.4f}" for k in keys))
    cells = [f"{mean[k]:.4f} +- {std[k]:.4f}" if std[k] is not None else f"{mean[k]:.4f}" for k in keys]
    lines.append(f"{'mean +- std':<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_set", default=None, help="registered dataset name, or custom (default: the classes of "
                                                    "the pred.csv files)")
    p.add_argument("--nb_classes", type=int, default=None, help="classes (targets) of --data_set custom")
    p.add_argument("--task", default=None, choices=TASKS, help="task of --data_set custom")
    p.add_argument("--pred_dirs", nargs="+", required=True, help="fold output folders (or pred.csv files)")
    p.add_argument("--fold_names", nargs="+", default=None,
                   help="one name per --pred_dirs entry for the pooled pred.csv (default: from their paths)")
    p.add_argument("--output_dir", default=None,
                   help="write the pooled pred.csv (with each row's fold), metrics.json (pooled metrics, and "
                        "per_fold / fold_mean / fold_std) and plots here")
    args = p.parse_args(argv)
    info = get_dataset_info(args.data_set, args.nb_classes, args.task) if args.data_set else None
    frame, metrics, names, info = pool(args.pred_dirs, info, args.fold_names)
    folds, mean, std = per_fold(frame, info, names)
    n = len(folds)
    metrics.update(folds=n, totals=TOTALS, fold_mean=mean, fold_std=std,
                   per_fold={f: {k: m[k] for k in summary_keys(info.task) + ["num_samples"]} for f, m in folds.items()})
    print(format_table(metrics, info.task, f"== {info.name}: {n} folds pooled, {len(frame)} videos (the paper's "
                                           f"protocol: one score over all folds' predictions) =="))
    print(fold_table(folds, mean, std, info.task, f"== {info.name}: per fold, and their mean +- std (the release "
                                                  f"README's totals) =="))
    if args.output_dir:
        folds_csv = [d if d.endswith(".csv") else os.path.join(d, "pred.csv") for d in args.pred_dirs]
        write_reports(args.output_dir, frame, metrics, info.task, names, provenance={
            "pooled": [{"pred_csv": os.path.abspath(p), "sha256": _sha256(p)} for p in folds_csv],
            "args": vars(args)})
        print(f"wrote {os.path.join(args.output_dir, 'metrics.json')} and pred.csv")
    else:
        summary = {k: v for k, v in finite_metrics(metrics).items() if not isinstance(v, (list, dict))}
        summary.update(finite_metrics({"fold_mean": mean, "fold_std": std}))
        json.dump(summary, sys.stdout, indent=2, allow_nan=False)
        print()
    return 0


def main(argv=None):
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Pool the test predictions of every fold and compute a dataset's overall metrics, as the paper does.

    python -m engine.pool_folds --data_set DFEW --pred_dirs out/fold1 out/fold2 ... [--output_dir out/pooled]
"""
import argparse
import json
import os
import sys

import pandas as pd

from datasets.registry import get_dataset_info

from .reports import format_table, metrics_from_frame, write_reports


def pool(pred_dirs, info):
    frames = []
    for d in pred_dirs:
        path = d if d.endswith(".csv") else os.path.join(d, "pred.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no predictions at {path}: run the fold's --eval first")
        frames.append(pd.read_csv(path).assign(fold=os.path.basename(os.path.dirname(os.path.abspath(path)))))
    frame = pd.concat(frames, ignore_index=True)
    names = list(info.classes or info.targets)
    task = "regression" if info.task == "regression" else "classification"
    return frame, metrics_from_frame(frame, task, names), names


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_set", required=True)
    p.add_argument("--nb_classes", type=int, default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--pred_dirs", nargs="+", required=True, help="fold output folders (or pred.csv files)")
    p.add_argument("--output_dir", default=None, help="write pooled pred.csv, metrics.json and plots here")
    args = p.parse_args(argv)
    info = get_dataset_info(args.data_set, args.nb_classes, args.task)
    frame, metrics, names = pool(args.pred_dirs, info)
    metrics["folds"] = len(args.pred_dirs)
    print(format_table(metrics, info.task, f"== {info.name}: {len(args.pred_dirs)} folds pooled, "
                                           f"{len(frame)} videos =="))
    if args.output_dir:
        write_reports(args.output_dir, frame, metrics, info.task, names)
    else:
        json.dump({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()

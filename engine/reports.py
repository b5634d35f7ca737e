"""Evaluation outputs: merged per-video predictions, pred.csv, metrics.json, plots, a printed table.

Each file is written whole or not at all (engine/files.py); pred.csv and metrics.json together.
metrics.json's ``provenance`` says what the numbers come from (the caller's checkpoint, selection
and data) and records the row count and sha256 of the pred.csv written with it, which
engine.pool_folds checks."""
import hashlib
import json
import os
import re
from collections import defaultdict

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay

from . import files
from .provenance import code_version, now
from .metrics import classification_metrics, finite_metrics, regression_metrics, summary_keys


def merge_views(records, task):
    """``records``: (video_index, view_index, output vector, target). Duplicates (padding) dropped.

    Views of a video are averaged: softmax probabilities for classification, outputs for regression.
    """
    seen, per_video, target = set(), defaultdict(list), {}
    for video, view, output, tgt in records:
        if (video, view) in seen:
            continue
        seen.add((video, view))
        output = np.asarray(output, dtype=np.float64)
        if task != "regression":
            e = np.exp(output - output.max())
            output = e / e.sum()
        per_video[video].append(output)
        target[video] = tgt
    videos = sorted(per_video)
    scores = np.stack([np.mean(per_video[v], axis=0) for v in videos])
    return videos, scores, [target[v] for v in videos]


def video_key(path, pattern):
    """Name of the video a clip belongs to (clip-averaged tasks): the first group of ``pattern``."""
    m = re.search(pattern, path)
    return m.group(1) if m else path


def predictions_frame(ids, scores, targets, task, names):
    rows = {"id": ids}
    if task == "regression":
        targets = np.asarray(targets, float).reshape(len(ids), -1)
        for i, n in enumerate(names):
            rows[f"target_{n}"] = targets[:, i]
            rows[f"pred_{n}"] = scores[:, i]
    else:
        rows["target"] = np.asarray(targets, int)
        rows["prediction"] = scores.argmax(1)
        for i, n in enumerate(names):
            rows[f"score_{n}"] = scores[:, i]
    return pd.DataFrame(rows)


def clip_average(frame, pattern, names):
    """Clip rows → video rows: mean clip scores, the (shared) self-report target, new argmax."""
    frame = frame.assign(id=[video_key(p, pattern) for p in frame["id"]])
    score_cols = [f"score_{n}" for n in names]
    grouped = frame.groupby("id", sort=True)
    videos = grouped[score_cols].mean()
    videos["target"] = grouped["target"].agg(lambda s: int(round(s.mean())))
    videos["prediction"] = videos[score_cols].to_numpy().argmax(1)
    return videos.reset_index()[["id", "target", "prediction"] + score_cols]


def metrics_from_frame(frame, task, names):
    if task == "regression":
        targets = frame[[f"target_{n}" for n in names]].to_numpy()
        preds = frame[[f"pred_{n}" for n in names]].to_numpy()
        return regression_metrics(targets, preds, names)
    out = classification_metrics(frame["target"].to_numpy(), frame["prediction"].to_numpy(), len(names))
    out["class_names"] = list(names)
    return out


def format_table(metrics, task, title=""):
    keys = [k for k in summary_keys(task) if k in metrics]
    lines = [title] if title else []
    lines.append("  ".join(f"{k:>11}" for k in keys))
    lines.append("  ".join(f"{metrics[k]:>11.4f}" for k in keys))
    if task == "regression":
        for name in metrics["ccc_per_target"]:
            lines.append(f"  {name:<18} pcc {metrics['pcc_per_target'][name]:.4f}  ccc "
                         f"{metrics['ccc_per_target'][name]:.4f}  acc {metrics['acc_per_target'][name]:.4f}")
    return "\n".join(lines)


def report_provenance(provenance, pred_bytes, rows):
    """metrics.json's ``provenance``: the caller's (what produced the numbers: checkpoint, epoch,
    selection rule, data), the code version, the time, and the pred.csv written with it."""
    return {**(provenance or {}), "code": code_version(), "time": now(),
            "pred_csv": {"rows": rows, "sha256": hashlib.sha256(pred_bytes).hexdigest()}}


def write_reports(output_dir, frame, metrics, task, names, prefix="", provenance=None):
    """pred.csv and metrics.json (written together or not at all), and confusion_matrix.png (or
    scatter_<target>.png for regression)."""
    os.makedirs(output_dir, exist_ok=True)
    pred = frame.to_csv(index=False).encode("utf-8")
    metrics = finite_metrics(metrics)
    if "non_finite" in metrics:
        print(f"WARNING: non-finite metrics, written as null: {', '.join(metrics['non_finite'])}")
    metrics["provenance"] = report_provenance(provenance, pred, len(frame))
    text = json.dumps(metrics, indent=2, allow_nan=False, default=str).encode("utf-8")
    files.write_together([(os.path.join(output_dir, f"{prefix}pred.csv"), lambda f: f.write(pred)),
                          (os.path.join(output_dir, f"{prefix}metrics.json"), lambda f: f.write(text))])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if task == "regression":
        for n in names:
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(frame[f"target_{n}"], frame[f"pred_{n}"], s=6, alpha=0.6)
            ax.set_xlabel(f"target {n}"), ax.set_ylabel(f"prediction {n}")
            ccc = metrics["ccc_per_target"][n]
            ax.set_title(f"{n}: CCC {ccc:.3f}" if ccc is not None else f"{n}: CCC not finite")
            fig.tight_layout()
            try:
                files.save_figure(fig, os.path.join(output_dir, f"{prefix}scatter_{n}.png"), dpi=100)
            finally:
                plt.close(fig)
        return
    fig = confusion_figure(plt, metrics["confusion_matrix"], names, f"UAR {metrics['uar']:.2f}  WAR {metrics['war']:.2f}")
    try:
        files.save_figure(fig, os.path.join(output_dir, f"{prefix}confusion_matrix.png"), dpi=100)
    finally:
        plt.close(fig)


def confusion_figure(plt, counts, names, title):
    """The confusion matrix in percent of each true class (rows sum to 100; a class without test
    videos is a row of zeros), with a colour bar, through scikit-learn's display."""
    cm = np.asarray(counts, float)
    percent = 100 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = 2 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ConfusionMatrixDisplay(percent, display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=True, values_format=".1f", xticks_rotation=45, im_kw=dict(vmin=0, vmax=100))
    ax.set_xlabel("predicted"), ax.set_ylabel("true (row %)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


write_json = files.write_json

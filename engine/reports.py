"""Evaluation outputs: merged per-video predictions, pred.csv, metrics.json, plots, a printed table."""
import json
import os
import re
from collections import defaultdict

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay

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


def write_reports(output_dir, frame, metrics, task, names, prefix="", provenance=None):
    """pred.csv, metrics.json and confusion_matrix.png (or scatter_<target>.png for regression).
    ``provenance`` (what produced the numbers: checkpoint, epoch, selection) goes into metrics.json
    under "provenance"."""
    os.makedirs(output_dir, exist_ok=True)
    frame.to_csv(os.path.join(output_dir, f"{prefix}pred.csv"), index=False)
    metrics = finite_metrics(metrics if provenance is None else {**metrics, "provenance": provenance})
    if "non_finite" in metrics:
        print(f"WARNING: non-finite metrics, written as null: {', '.join(metrics['non_finite'])}")
    with open(os.path.join(output_dir, f"{prefix}metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, allow_nan=False)
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
            fig.tight_layout(), fig.savefig(os.path.join(output_dir, f"{prefix}scatter_{n}.png"), dpi=100)
            plt.close(fig)
        return
    fig = confusion_figure(plt, metrics["confusion_matrix"], names, f"UAR {metrics['uar']:.2f}  WAR {metrics['war']:.2f}")
    fig.savefig(os.path.join(output_dir, f"{prefix}confusion_matrix.png"), dpi=100)
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


def write_json(path, obj):
    """Write ``obj`` as JSON atomically (a temporary file renamed): a killed run leaves no cut file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
    os.replace(tmp, path)

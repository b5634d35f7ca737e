"""Task metrics, computed once on the full (gathered) predictions."""
import math
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score


def classification_metrics(targets, preds, num_classes):
    """UAR (mean recall over the classes present in ``targets``), WAR (accuracy), F1s, per class."""
    targets, preds = np.asarray(targets, dtype=int), np.asarray(preds, dtype=int)
    labels = list(range(num_classes))
    present = sorted(set(targets.tolist()))
    recalls = recall_score(targets, preds, labels=labels, average=None, zero_division=0)
    with warnings.catch_warnings():
        # A class predicted but absent from the targets (a small split) has no recall: UAR is the
        # mean over the classes present, as scikit-learn computes it, without its warning.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        uar = float(balanced_accuracy_score(targets, preds)) * 100 if present else 0.0
    return {
        "uar": uar,
        "war": float(accuracy_score(targets, preds)) * 100,
        "weighted_f1": float(f1_score(targets, preds, labels=present, average="weighted", zero_division=0)) * 100,
        "micro_f1": float(f1_score(targets, preds, labels=labels, average="micro", zero_division=0)) * 100,
        "macro_f1": float(f1_score(targets, preds, labels=present, average="macro", zero_division=0)) * 100,
        "per_class_acc": {str(c): float(recalls[c]) * 100 for c in present},
        "confusion_matrix": confusion_matrix(targets, preds, labels=labels).tolist(),
        "num_samples": int(len(targets)),
    }


def pcc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")  # reported as such (see finite_metrics), never as a plausible number
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def ccc(x, y):
    """Lin's concordance correlation coefficient (population moments)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def regression_metrics(targets, preds, target_names):
    """PCC and CCC per target and their mean; ACC = 1 - MAE (First Impressions) likewise."""
    targets, preds = np.asarray(targets, float), np.asarray(preds, float)
    out = {"num_samples": int(len(targets))}
    for name, metric in (("pcc", pcc), ("ccc", ccc)):
        per = {n: metric(preds[:, i], targets[:, i]) for i, n in enumerate(target_names)}
        out[f"{name}_per_target"] = per
        out[name] = float(np.mean(list(per.values())))
    acc = {n: float(1 - np.mean(np.abs(preds[:, i] - targets[:, i]))) for i, n in enumerate(target_names)}
    out["acc_per_target"], out["acc"] = acc, float(np.mean(list(acc.values())))
    out["mse"] = float(np.mean((preds - targets) ** 2))
    return out


def summary_keys(task):
    return ["uar", "war", "weighted_f1", "macro_f1"] if task != "regression" else ["pcc", "ccc", "acc", "mse"]


def finite_metrics(metrics):
    """``metrics`` with every NaN or infinite number replaced by None, and the replaced keys listed
    under ``non_finite`` with the reason, so a metrics file is strict JSON and says what went wrong."""
    bad = {}

    def clean(value, key):
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            bad[key] = f"{value} (the predictions hold NaN or inf: the model diverged, or its outputs overflowed)"
            return None
        return value

    out = clean(metrics, "")
    if bad:
        out["non_finite"] = bad
    return out

"""What the engine needs to know about each dataset: task, classes or targets, splits, metric,
sampling rate. The one home of these facts: the entry points, the tools and the scripts ask here.

    python -m datasets.registry DFEW      prints the facts as shell assignments (for scripts/)
"""
import argparse
import shlex
import sys
from dataclasses import dataclass


class DatasetSpecError(ValueError):
    """An unknown dataset name, or options that do not fit the dataset."""
    user_error = True  # the command line prints one error line (engine/cli.py)


def _folds(n):
    return tuple(f"split{k:02d}" for k in range(1, n + 1))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # classification | regression | clip_classification | pretrain
    classes: tuple = ()
    targets: tuple = ()
    # Sub-folders of the split folder that the preprocessing writes, one run each ("." = the
    # folder itself); "joint" pools their test predictions into one score, "each" scores each.
    splits: tuple = (".",)
    pool: str = "joint"
    metric: str = "uar"  # what picks the best checkpoint and what the paper reports first
    sampling_rate: int = 4

    @property
    def num_outputs(self):
        return len(self.classes) if self.classes else len(self.targets)


_EMOTIONS7 = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
_DATASETS = [
    DatasetInfo("VOXCELEB2", "pretrain"),
    DatasetInfo("DFEW", "classification", _EMOTIONS7, splits=_folds(5)),
    DatasetInfo("FERV39K", "classification", _EMOTIONS7, sampling_rate=1),
    DatasetInfo("MAFW", "classification",
                ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
                 "helplessness", "disappointment"), splits=_folds(5)),
    DatasetInfo("CREMA-D", "classification", ("anger", "disgust", "fear", "happy", "neutral", "sad"),
                splits=_folds(5)),
    DatasetInfo("RAVDESS", "classification",
                ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"), splits=_folds(6)),
    DatasetInfo("ENTERFACE05", "classification",
                ("anger", "disgust", "fear", "happiness", "sadness", "surprise"), splits=_folds(5)),
    DatasetInfo("WEREWOLF-XL", "regression", targets=("arousal", "valence", "dominance"), splits=_folds(5),
                metric="ccc"),
    # One run per self-reported target, each scored on its own: 5 score classes.
    DatasetInfo("AVCAFFE", "clip_classification", tuple(str(i) for i in range(5)), splits=("arousal", "valence"),
                pool="each", metric="weighted_f1"),
    DatasetInfo("FIRST-IMPRESSIONS", "regression",
                targets=("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"),
                metric="ccc"),
]
DATASETS = {d.name: d for d in _DATASETS}
_ALIASES = {"CREMAD": "CREMA-D", "ENTERFACE": "ENTERFACE05", "WEREWOLF": "WEREWOLF-XL", "WEREWOLFXL": "WEREWOLF-XL",
            "FIRST_IMPRESSIONS": "FIRST-IMPRESSIONS", "FIRSTIMPRESSIONS": "FIRST-IMPRESSIONS", "CHALEARN": "FIRST-IMPRESSIONS",
            "VOXCELEB": "VOXCELEB2", "FERV39K": "FERV39K"}


def get_dataset_info(name, nb_classes=None, task=None, num_targets=None):
    """Look up a dataset by name (case-insensitive). ``custom`` builds an entry from the arguments."""
    key = name.upper().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key == "CUSTOM":
        task = task or "classification"
        if task == "regression":
            n = num_targets or nb_classes
            if not n:
                raise DatasetSpecError("--data_set custom with a regression task needs --nb_classes (number of targets)")
            return DatasetInfo("custom", task, targets=tuple(f"target{i}" for i in range(n)), metric="ccc")
        if not nb_classes:
            raise DatasetSpecError("--data_set custom needs --nb_classes")
        return DatasetInfo("custom", task, tuple(str(i) for i in range(nb_classes)),
                           metric="weighted_f1" if task == "clip_classification" else "uar")
    if key not in DATASETS:
        raise DatasetSpecError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or custom")
    info = DATASETS[key]
    if nb_classes and info.task != "pretrain" and nb_classes != info.num_outputs:
        raise DatasetSpecError(f"{info.name} has {info.num_outputs} {'classes' if info.classes else 'targets'}, "
                         f"but --nb_classes {nb_classes} was given")
    return info


def read_class_names(value):
    """A comma-separated list, or a text file with one name a line (like the demo's classes.txt)."""
    import os
    if os.path.isfile(value):
        with open(value, encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in value.split(",") if v.strip()]


def check_recorded_names(names, recorded, source):
    """Names given for a model's outputs must be distinct and, where its checkpoint records the
    names it was trained with, those in that order: the checkpoint's order says what each output
    means, and other names would relabel predictions silently."""
    names = list(names)
    if recorded and list(recorded) == [str(i) for i in range(len(recorded))]:
        recorded = None  # numbers: the run had no names to record
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetSpecError(f"{source} names {', '.join(twice)} more than once")
    if recorded and names != list(recorded):
        raise DatasetSpecError(f"{source} lists {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}, but the "
                               f"checkpoint was trained with {', '.join(list(recorded)[:8])}"
                               f"{' ...' if len(recorded) > 8 else ''} in that order (each output means that class): "
                               f"drop the names to use the checkpoint's, or fix {source}")
    return names


def output_names(num_outputs, data_set=None, task=None, nb_classes=None, num_targets=None, class_names=None,
                 recorded=None):
    """``(task, names)`` of a model's outputs: ``class_names`` if given (a list, or a string as
    :func:`read_class_names` takes), else the names its checkpoint ``recorded``, else the
    registry's for ``data_set``, else numbers. The count must match ``num_outputs``; given names
    must be the recorded ones (:func:`check_recorded_names`)."""
    names = None
    if data_set:
        info = get_dataset_info(data_set, nb_classes or num_outputs, task, num_targets)
        if info.task != "pretrain":
            task, names = info.task, list(info.classes or info.targets)
    if recorded and len(recorded) == num_outputs:
        names = list(recorded)
    if class_names:
        given = read_class_names(class_names) if isinstance(class_names, str) else list(class_names)
        names = check_recorded_names(given, recorded if recorded and len(recorded) == num_outputs else None,
                                     f"--class_names {class_names}" if isinstance(class_names, str) else "--class_names")
    names = names or [str(i) for i in range(num_outputs)]
    if len(names) != num_outputs:
        raise DatasetSpecError(f"{len(names)} class/target names ({', '.join(names[:8])}) for a model with "
                               f"{num_outputs} outputs")
    return task or "classification", names


def sampling_rate_of(cfg):
    """The frame stride of a checkpoint's recorded options ``cfg``; for a file that records none,
    the stride of its dataset's recipe (FERV39k samples every frame), 4 otherwise."""
    if cfg.get("sampling_rate"):
        return cfg["sampling_rate"]
    try:
        return get_dataset_info(cfg["data_set"], task=cfg.get("task")).sampling_rate if cfg.get("data_set") else 4
    except DatasetSpecError:
        return 4


def main(argv=None):
    p = argparse.ArgumentParser(description="A registered dataset's facts as shell assignments.")
    p.add_argument("data_set")
    args = p.parse_args(argv)
    try:
        info = get_dataset_info(args.data_set)
    except DatasetSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    facts = {"DATA_SET": info.name, "TASK": info.task, "SPLITS": " ".join(info.splits), "POOL": info.pool,
             "VAL_METRIC": info.metric, "NB_CLASSES": info.num_outputs, "SAMPLING_RATE_DEFAULT": info.sampling_rate}
    print("\n".join(f"{k}={shlex.quote(str(v))}" for k, v in facts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

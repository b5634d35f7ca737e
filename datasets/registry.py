"""What the engine needs to know about each dataset: task, classes or targets, folds, metric."""
from dataclasses import dataclass, field


class DatasetSpecError(ValueError):
    """An unknown dataset name, or options that do not fit the dataset."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # classification | regression | clip_classification | pretrain
    classes: tuple = ()
    targets: tuple = ()
    folds: int = 1
    metric: str = "uar"  # what picks the best checkpoint and what the paper reports first
    sampling_rate: int = 4
    has_val: bool = False
    notes: str = ""
    extra_metrics: tuple = field(default_factory=tuple)

    @property
    def num_outputs(self):
        return len(self.classes) if self.classes else len(self.targets)


_DATASETS = [
    DatasetInfo("VOXCELEB2", "pretrain", notes="unlabelled pre-training clips"),
    DatasetInfo("DFEW", "classification",
                ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"), folds=5),
    DatasetInfo("FERV39K", "classification",
                ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"), sampling_rate=1),
    DatasetInfo("MAFW", "classification",
                ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
                 "helplessness", "disappointment"), folds=5),
    DatasetInfo("CREMA-D", "classification", ("anger", "disgust", "fear", "happy", "neutral", "sad"), folds=5),
    DatasetInfo("RAVDESS", "classification",
                ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"), folds=6),
    DatasetInfo("ENTERFACE05", "classification",
                ("anger", "disgust", "fear", "happiness", "sadness", "surprise"), folds=5),
    DatasetInfo("WEREWOLF-XL", "regression", targets=("arousal", "valence", "dominance"), folds=5, metric="ccc"),
    DatasetInfo("AVCAFFE", "clip_classification", tuple(str(i) for i in range(5)), metric="weighted_f1",
                notes="one run per self-report target (arousal or valence); 5 score classes"),
    DatasetInfo("FIRST-IMPRESSIONS", "regression",
                targets=("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"),
                metric="ccc", has_val=True, extra_metrics=("acc",)),
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

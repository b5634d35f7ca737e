"""Pooling fold predictions: the predictions must be the dataset's, each fold once."""
import json

import pandas as pd
import pytest

from engine import pool_folds


def write_fold(folder, names, ids, seed=0):
    folder.mkdir(parents=True)
    rows = {"id": ids, "target": [i % len(names) for i in range(len(ids))],
            "prediction": [(i + seed) % len(names) for i in range(len(ids))]}
    for k, n in enumerate(names):
        rows[f"score_{n}"] = [1.0 / len(names)] * len(ids)
    pd.DataFrame(rows).to_csv(folder / "pred.csv", index=False)
    return folder


DFEW = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def test_folds_pool_into_one_score(tmp_path, capsys):
    a = write_fold(tmp_path / "split01", DFEW, ["a/1", "a/2", "a/3"])
    b = write_fold(tmp_path / "split02", DFEW, ["b/1", "b/2"], seed=1)
    assert pool_folds.main(["--data_set", "DFEW", "--pred_dirs", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["num_samples"] == 5 and summary["folds"] == 2
    assert pool_folds.main(["--pred_dirs", str(a), str(b), "--output_dir", str(tmp_path / "pooled")]) == 0
    assert json.loads((tmp_path / "pooled" / "metrics.json").read_text())["class_names"] == DFEW


@pytest.mark.parametrize("case,message", [
    ("six classes as DFEW", "has 6 classes (happy, sad, neutral, angry, surprise, disgust), but DFEW has 7"),
    ("same fold twice", "the same fold is given more than once"),
    ("overlapping folds", "appear in more than one fold"),
    ("regression dataset", "holds classification predictions, but WEREWOLF-XL is a regression task"),
    ("missing fold", "no predictions at"),
])
def test_predictions_that_do_not_fit_are_refused(tmp_path, capsys, case, message):
    a = write_fold(tmp_path / "split01", DFEW[:6] if case == "six classes as DFEW" else DFEW, ["a/1", "a/2"])
    b = write_fold(tmp_path / "split02", DFEW, ["a/2"] if case == "overlapping folds" else ["b/1"])
    dirs = {"same fold twice": [a, tmp_path / "split01" / "pred.csv"], "missing fold": [a, tmp_path / "x"]}
    data_set = "WEREWOLF-XL" if case == "regression dataset" else "DFEW"
    argv = ["--data_set", data_set, "--pred_dirs", *map(str, dirs.get(case, [a, b]))]
    assert pool_folds.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(SystemExit) as e:
        pool_folds.main(["--data_set", "custom", "--nb_classes", "3", "--task", "regresion", "--pred_dirs", "x"])
    assert e.value.code == 2


def test_custom_datasets_pool_under_the_names_of_their_predictions(tmp_path, capsys):
    names = ["smile", "frown", "blink"]
    a = write_fold(tmp_path / "split01", names, ["a/1", "a/2"])
    b = write_fold(tmp_path / "split02", names, ["b/1"])
    out = tmp_path / "pooled"
    assert pool_folds.main(["--data_set", "custom", "--nb_classes", "3", "--pred_dirs", str(a), str(b),
                            "--output_dir", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["class_names"] == names
    c = write_fold(tmp_path / "split03", ["smile", "frown", "yawn"], ["c/1"])
    assert pool_folds.main(["--data_set", "custom", "--nb_classes", "3", "--pred_dirs", str(a), str(c)]) == 2
    assert "yawn" in capsys.readouterr().err
    assert pool_folds.main(["--data_set", "custom", "--nb_classes", "4", "--pred_dirs", str(a)]) == 2

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


def fold_with(folder, names, rows):
    """A fold's pred.csv from ``(id, target, prediction)`` rows."""
    folder.mkdir(parents=True)
    frame = pd.DataFrame(rows, columns=["id", "target", "prediction"])
    for k, n in enumerate(names):
        frame[f"score_{n}"] = (frame["prediction"] == k).astype(float)
    frame.to_csv(folder / "pred.csv", index=False)
    return folder


def test_both_totals_on_folds_of_unequal_class_mixes(tmp_path, capsys):
    """Fold 1 is mostly class 0, fold 2 mostly class 1, each predicting its majority class. By hand:
    fold 1 has UAR 50 (recalls 1, 0), WAR 80 (4 of 5); fold 2 UAR 50 (0, 1), WAR 66.67 (2 of 3).
    Pooled: recalls 4/5 and 2/3, UAR 73.33, WAR 6/8 = 75. Over folds: UAR 50 +- 0, WAR 73.33 +-
    9.43 (sample std): the two protocols differ, and each is right."""
    names = ["a", "b", "c"]
    one = fold_with(tmp_path / "out" / "split01" / "eval", names,
                    [("v1", 0, 0), ("v2", 0, 0), ("v3", 0, 0), ("v4", 0, 0), ("v5", 1, 0)])
    two = fold_with(tmp_path / "out" / "split02" / "eval", names, [("w1", 1, 1), ("w2", 1, 1), ("w3", 0, 1)])
    pooled = tmp_path / "out" / "pooled"
    assert pool_folds.main(["--pred_dirs", str(one), str(two), "--output_dir", str(pooled)]) == 0
    printed = capsys.readouterr().out
    assert "2 folds pooled, 8 videos (the paper's protocol" in printed
    assert "mean +- std (the release README's totals)" in printed
    m = json.loads((pooled / "metrics.json").read_text())
    assert m["uar"] == pytest.approx((4 / 5 + 2 / 3) / 2 * 100) and m["war"] == pytest.approx(75.0)
    assert m["per_fold"]["split01"]["uar"] == pytest.approx(50.0)
    assert m["per_fold"]["split01"]["war"] == pytest.approx(80.0)
    assert m["per_fold"]["split02"]["uar"] == pytest.approx(50.0)
    assert m["per_fold"]["split02"]["war"] == pytest.approx(200 / 3)
    assert m["fold_mean"]["uar"] == pytest.approx(50.0) and m["fold_std"]["uar"] == pytest.approx(0.0)
    assert m["fold_mean"]["war"] == pytest.approx((80 + 200 / 3) / 2)
    assert m["fold_std"]["war"] == pytest.approx(abs(80 - 200 / 3) / 2 ** 0.5)
    assert m["folds"] == 2 and "pooled predictions" in m["totals"]
    for line, value in (("split01", "50.0000"), ("mean +- std", "50.0000 +- 0.0000")):
        assert any(row.startswith(line) and value in row for row in printed.splitlines()), line
    pred = pd.read_csv(pooled / "pred.csv")  # each row's fold named by its split
    assert pred.groupby("fold")["id"].apply(list).to_dict() == {"split01": ["v1", "v2", "v3", "v4", "v5"],
                                                                 "split02": ["w1", "w2", "w3"]}
    # Without --output_dir both totals are printed, the summary JSON included.
    assert pool_folds.main(["--pred_dirs", str(one), str(two), "--fold_names", "f1", "f2"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["uar"] == pytest.approx(m["uar"]) and summary["fold_mean"]["uar"] == pytest.approx(50.0)
    assert any(row.startswith("f1 ") for row in out.splitlines())

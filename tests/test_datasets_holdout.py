"""python -m datasets.holdout: a seeded, class-stratified val.csv out of train.csv, in a new folder."""
from collections import Counter

import pytest

from datasets import holdout
from datasets.build import has_validation_split


def make_split(folder, counts, test_lines=3, regression=False):
    folder.mkdir(parents=True)
    lines = []
    for label, n in enumerate(counts):
        for i in range(n):
            lines.append(f"clips/{label}_{i}.mp4 " + (f"{0.1 * i:.1f} {0.2 * label:.1f}" if regression else str(label)))
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    (folder / "test.csv").write_text("".join(f"clips/t{i}.mp4 0\n" for i in range(test_lines)))
    (folder / "classes.txt").write_text("x\ny\nz\n")
    return lines


def lines_of(path):
    return path.read_text().splitlines()


def test_folds_get_a_stratified_validation_split_and_the_originals_stay(tmp_path, capsys):
    counts = (40, 20, 10)
    originals = {f: make_split(tmp_path / "dfew" / f, counts) for f in ("split01", "split02")}
    before = {p: p.read_bytes() for p in (tmp_path / "dfew").rglob("*") if p.is_file()}
    assert holdout.main([str(tmp_path / "dfew"), "--out", str(tmp_path / "held"), "--fraction", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert {p: p.read_bytes() for p in (tmp_path / "dfew").rglob("*") if p.is_file()} == before
    for fold, lines in originals.items():
        out = tmp_path / "held" / fold
        train, val = lines_of(out / "train.csv"), lines_of(out / "val.csv")
        assert sorted(train + val) == sorted(lines) and not set(train) & set(val)
        assert train == [x for x in lines if x in set(train)]  # the file's order is kept
        assert Counter(x.split()[1] for x in val) == {"0": 8, "1": 4, "2": 2}  # 20% of every class
        assert (out / "test.csv").read_bytes() == (tmp_path / "dfew" / fold / "test.csv").read_bytes()
        assert (out / "classes.txt").is_file() and has_validation_split(str(out))
        assert f"{out}: 56 train, 14 val (stratified by class, seed 0)" in printed
    again = tmp_path / "again"
    assert holdout.main([str(tmp_path / "dfew" / "split01"), "--out", str(again), "--fraction", "0.2"]) == 0
    assert lines_of(again / "val.csv") == lines_of(tmp_path / "held" / "split01" / "val.csv")  # seeded
    other = tmp_path / "other"
    assert holdout.main([str(tmp_path / "dfew" / "split01"), "--out", str(other), "--fraction", "0.2",
                         "--seed", "1"]) == 0
    assert lines_of(other / "val.csv") != lines_of(again / "val.csv")


@pytest.mark.parametrize("case,message", [
    ("existing output", "already holds train.csv, val.csv, test.csv: choose another --out"),
    ("source has val.csv", "already has a val.csv"),
    ("out is src", "--out must be a new folder"),
    ("too few of a class", "cannot hold out 0.2 of 11 lines by class"),
    ("bad fraction", "--fraction must be between 0 and 1"),
])
def test_what_cannot_be_done_is_one_error_line_and_nothing_written(tmp_path, capsys, case, message):
    src = tmp_path / "src"
    make_split(src, (10, 1) if case == "too few of a class" else (10, 10))
    out = src if case == "out is src" else tmp_path / "out"
    if case == "existing output":
        assert holdout.main([str(src), "--out", str(out)]) == 0
        capsys.readouterr()
    if case == "source has val.csv":
        (src / "val.csv").write_text("clips/v.mp4 0\n")
    kept = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = [str(src), "--out", str(out), "--fraction", "1.5" if case == "bad fraction" else "0.2"]
    assert holdout.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == kept


def test_regression_targets_are_held_out_at_random(tmp_path, capsys):
    lines = make_split(tmp_path / "src", (10, 10), regression=True)
    assert holdout.main([str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--fraction", "0.25"]) == 0
    assert "at random (regression targets)" in capsys.readouterr().out
    val = lines_of(tmp_path / "out" / "val.csv")
    assert len(val) == 5 and set(val) <= set(lines)

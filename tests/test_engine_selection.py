"""No model selection on the test split: without a val.csv nothing is selected and the last epoch is
tested (the release's protocol); with one, the best epoch by validation is kept, and tested when
asked; metrics.json says which checkpoint, epoch and rule its numbers come from."""
import json
import shutil

import pandas as pd
import pytest
import torch

import run_finetune
from conftest import FT

VIDEO = ["--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--nb_classes", "6", "--batch_size", "4",
         "--num_workers", "0", "--device", "cpu", "--amp", "none"]


@pytest.fixture(autouse=True)
def one_thread():
    """The runs here are in this process: one thread, as the subprocess runs get (on a shared 2-core
    machine a second one only waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def log_of(out):
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


def metrics_of(out):
    return json.loads((out / "metrics.json").read_text())


def evaluate(checkpoint, data, demo, out):
    assert run_finetune.cli([*VIDEO, "--data_path", str(data), "--data_root", str(demo), "--eval", "True",
                             "--finetune", str(checkpoint), "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def no_val(demo, tmp_path_factory):
    """The demo's split without its val.csv, as DFEW, FERV39k and MAFW are."""
    split = tmp_path_factory.mktemp("no_val")
    for name in ("train.csv", "test.csv", "classes.txt"):
        shutil.copy(demo / name, split / name)
    return split


def checkpoint_tested(out):
    """What metrics.json says its numbers come from: the checkpoint, its epoch and the selection rule."""
    return {k: metrics_of(out)["provenance"].get(k) for k in ("checkpoint", "epoch", "selection")}


def test_without_a_validation_split_the_last_epoch_is_tested(demo, pretrained, no_val, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*FT, "--data_path", str(no_val), "--data_root", str(demo), "--finetune", str(pretrained),
            "--epochs", "2", "--save_ckpt_freq", "1", "--output_dir", str(out)]
    assert run_finetune.cli(argv) == 0
    printed = capsys.readouterr().out
    assert "no val.csv: nothing is selected, the last epoch is tested" in printed
    assert "test uar" in printed and "(monitoring: not used to select)" in printed
    assert not (out / "checkpoint-best.pth").exists()
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint-0.pth", "checkpoint-1.pth"]
    for record in log_of(out):  # scores on test.csv are logged as test scores, never as val_*
        assert "test_uar" in record and not any(k.startswith("val_") for k in record)
    last = {"checkpoint": str(out / "checkpoint-1.pth"), "epoch": 1, "selection": "none (last epoch)"}
    assert checkpoint_tested(out) == last
    ev = evaluate(out / "checkpoint-1.pth", no_val, demo, tmp_path / "eval")
    pd.testing.assert_frame_equal(pd.read_csv(out / "pred.csv"), pd.read_csv(ev / "pred.csv"), rtol=0, atol=1e-6)
    assert checkpoint_tested(ev) == last
    assert metrics_of(ev)["uar"] == metrics_of(out)["uar"]
    # A model trained with the aspect-keeping resize is tested with it: --eval adopts the option.
    ckpt = torch.load(out / "checkpoint-1.pth", weights_only=True)
    ckpt["args"]["frame_resize"] = "keep_aspect"
    torch.save(ckpt, tmp_path / "kept.pth")
    capsys.readouterr()
    evaluate(tmp_path / "kept.pth", no_val, demo, tmp_path / "eval_kept")
    assert "frame_resize=keep_aspect" in capsys.readouterr().out


def test_testing_the_best_epoch_needs_a_validation_split(demo, pretrained, no_val, tmp_path, capsys):
    argv = [*FT, "--data_path", str(no_val), "--data_root", str(demo), "--finetune", str(pretrained),
            "--epochs", "1", "--test_best", "True", "--output_dir", str(tmp_path)]
    assert run_finetune.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --test_best needs a validation split") and "datasets.holdout" in err
    assert not list(tmp_path.glob("checkpoint*"))


def test_with_a_validation_split_the_best_epoch_by_validation_is_kept_and_tested(demo, pretrained, tmp_path):
    out = tmp_path / "run"
    argv = [*FT, "--data_path", str(demo), "--data_root", str(demo), "--finetune", str(pretrained),
            "--epochs", "2", "--save_ckpt_freq", "10", "--lr", "1e-2", "--test_best", "True", "--output_dir", str(out)]
    assert run_finetune.cli(argv) == 0
    scores = [record["val_uar"] for record in log_of(out)]
    best = scores.index(max(scores))  # the first epoch with the highest validation UAR
    rule = "best val uar on val.csv"
    kept = torch.load(out / "checkpoint-best.pth", weights_only=True)
    assert (kept["epoch"], kept["selection"]) == (best, rule)
    assert checkpoint_tested(out) == {"checkpoint": str(out / "checkpoint-best.pth"), "epoch": best, "selection": rule}
    ev = evaluate(out / "checkpoint-best.pth", demo, demo, tmp_path / "eval")
    pd.testing.assert_frame_equal(pd.read_csv(out / "pred.csv"), pd.read_csv(ev / "pred.csv"), rtol=0, atol=1e-6)
    assert metrics_of(ev)["provenance"]["selection"] == rule and metrics_of(ev)["provenance"]["epoch"] == best
    last = torch.load(out / "checkpoint-1.pth", weights_only=True)  # the periodic one records no selection
    assert "selection" not in last and last["epoch"] == 1

"""run_finetune.py --tuning linear|lora on the demo set: each mode learns, its checkpoints hold only
what trained, --eval and the tools load them over a backbone file that moved, and tools.merge_lora
writes a plain checkpoint with the same outputs."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import run_finetune
from conftest import TINY, in_process
from datasets import read_annotations
from models import load_checkpoint_file, model_from_checkpoint
from models.tuning import Tuning, is_trained
from tools import merge_lora, predict

# The fixture's backbone is one epoch of pre-training on 24 clips, next to random: no mode can
# generalise from it in seconds. What a short run can show is that training in each mode fits the
# clips it trains on, so the test split here is the training split (24 clips, chance 1/6).
# Settings found on this demo: lr 0.02 after batch scaling, no augmentation; LoRA's adapters get a
# small share of it through layer decay (a large step on a near-random encoder scrambles its features).
LEARN = ["--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--nb_classes", "6", *TINY, "--batch_size", "4",
         "--epochs", "8", "--val_freq", "8", "--lr", "1.28", "--train_crop_scale", "1", "1", "--test_num_segment", "1"]
MODES = {"linear": [],  # the linear-probing recipe turns augmentation off by itself
         "lora": ["--layer_decay", "0.05", "--mixup", "0", "--cutmix", "0", "--aa", "", "--reprob", "0",
                  "--drop_path", "0", "--smoothing", "0"]}


@pytest.fixture(scope="module")
def fit_split(demo, tmp_path_factory):
    split = tmp_path_factory.mktemp("fit")
    for name in ("train", "val", "test"):
        shutil.copy(demo / "train.csv", split / f"{name}.csv")
    return split


@pytest.fixture(scope="module")
def runs(demo, pretrained, fit_split, tmp_path_factory):
    """Each mode trained from its own copy of the pre-trained checkpoint (the tests move it)."""
    out = {}
    for mode, extra in MODES.items():
        root = tmp_path_factory.mktemp(mode)
        backbone = root / "backbone.pth"
        shutil.copy(pretrained, backbone)
        status, stdout, stderr = in_process(run_finetune.cli, [
            *LEARN, *extra, "--tuning", mode, "--finetune", backbone, "--data_path", fit_split, "--data_root", demo,
            "--output_dir", root / "run"])
        assert status == 0, stdout[-3000:] + stderr[-3000:]
        out[mode] = (root, SimpleNamespace(stdout=stdout))
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_learns_the_demo_and_saves_only_what_trained(runs, mode):
    root, proc = runs[mode]
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    print(f"{mode}: accuracy {metrics['war']:.1f}% on the 24 training clips (chance 16.7%)")
    assert metrics["num_samples"] == 24 and metrics["war"] >= 40
    assert f"tuning {mode}: " in proc.stdout
    if mode == "linear":
        assert "linear probing recipe: " in proc.stdout and "mixup=0.0" in proc.stdout
    for name in ("checkpoint-best.pth", "checkpoint-7.pth"):
        ckpt = load_checkpoint_file(root / "run" / name)
        assert ckpt["tuning"]["mode"] == mode and ckpt["backbone"]["path"] == str(root / "backbone.pth")
        assert all(is_trained(k, Tuning(**ckpt["tuning"])) for k in ckpt["model"])
        adapters = [v for k, v in ckpt["model"].items() if ".lora_B." in k]
        assert bool(adapters) == (mode == "lora") and all(v.abs().max() > 0 for v in adapters)  # B starts at 0
        assert (root / "run" / name).stat().st_size < 0.1 * (root / "backbone.pth").stat().st_size


def test_eval_predict_and_merge_load_a_lora_checkpoint_over_a_moved_backbone(runs, demo, fit_split, tmp_path):
    root, _ = runs["lora"]
    moved = tmp_path / "moved.pth"
    shutil.move(root / "backbone.pth", moved)
    adapter = root / "run" / "checkpoint-best.pth"
    ev = tmp_path / "eval"
    status, stdout, stderr = in_process(run_finetune.cli, [*LEARN, "--data_path", fit_split, "--data_root", demo,
                                                           "--eval", "True", "--finetune", adapter, "--backbone", moved,
                                                           "--output_dir", ev])
    assert status == 0, stdout[-3000:] + stderr[-3000:]
    trained = json.loads((root / "run" / "metrics.json").read_text())
    assert json.loads((ev / "metrics.json").read_text())["war"] == trained["war"]

    merged = tmp_path / "merged.pth"
    assert merge_lora.main([str(adapter), "--out", str(merged), "--backbone", str(moved)]) == 0
    plain = load_checkpoint_file(merged)
    assert "tuning" not in plain and not any("lora" in k for k in plain["model"])
    video = str(read_annotations(str(demo / "test.csv"))[0].path)
    with_adapters = predict.Predictor(str(adapter), {"backbone": str(moved)}).predict(video)
    from_merged = predict.Predictor(str(merged)).predict(video)
    np.testing.assert_allclose(list(with_adapters["probs"].values()), list(from_merged["probs"].values()), atol=1e-5)
    x = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        unmerged_logits = model_from_checkpoint(adapter, backbone=moved)[0](x)
        merged_logits = model_from_checkpoint(merged)[0](x)
    torch.testing.assert_close(merged_logits, unmerged_logits, rtol=0, atol=1e-5)

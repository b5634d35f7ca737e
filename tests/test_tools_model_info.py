"""tools/model_info.py: the zoo table (SVFAP-B at 43.5 GMACs, docs/model.md) and checkpoint checks."""
import pandas as pd
import pytest
import timm
import torch

import models  # noqa: F401
from engine.checkpoint import save_checkpoint, training_state
from tools import model_info

TINY = dict(img_size=64, stage_depths=(1, 1, 1))
ARGS = {"input_size": 64, "num_frames": 16, "stage_depths": [1, 1, 1]}


def test_svfap_base_gmacs_and_params():
    stats = model_info.model_stats("svfap_base_patch16_160")
    assert stats["GMACs"] == pytest.approx(43.5, rel=0.01)
    assert stats["params_M"] == pytest.approx(77.64, abs=0.01)
    assert stats["input"] == "1x3x16x160x160"


def test_table_cli(tmp_path, capsys):
    csv = tmp_path / "zoo.csv"
    assert model_info.main(["--models", "*tiny*", "--csv", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert list(table["model"]) == ["svfap_tiny_patch16_160", "pretrain_svfap_tiny_patch16_160"]
    # The 90% mask leaves the pre-training encoder a tenth of the tokens: far fewer MACs, more weights (decoder).
    fine, pre = table.itertuples()
    assert pre.GMACs < 0.7 * fine.GMACs and pre.params_M > fine.params_M
    # Counting on the meta device gives the numbers a real forward pass gives.
    model = timm.create_model("svfap_tiny_patch16_160")
    assert fine.GMACs == pytest.approx(models.count_macs(model, torch.randn(1, 3, 16, 160, 160)) / 1e9, abs=0.005)
    assert "svfap_tiny_patch16_160" in capsys.readouterr().out
    assert model_info.main(["--models", "resnet*"]) == 2
    assert "no registered model matches" in capsys.readouterr().err


def test_checkpoint_check(tmp_path, capsys):
    torch.manual_seed(0)
    pre = timm.create_model("pretrain_svfap_tiny_patch16_160", **TINY)
    save_checkpoint(str(tmp_path / "pre.pth"), training_state(pre, args={**ARGS, "model": "pretrain_svfap_tiny_patch16_160"}))
    fine = timm.create_model("svfap_tiny_patch16_160", num_classes=7, **TINY)
    save_checkpoint(str(tmp_path / "fine.pth"), training_state(fine, args={**ARGS, "model": "svfap_tiny_patch16_160"}))

    # The pre-training file against its own model: everything matches.
    assert model_info.main(["--checkpoint", str(tmp_path / "pre.pth")]) == 0
    out = capsys.readouterr().out
    n = len(pre.state_dict())
    assert f"{n} match" in out and "verdict: loads (strict)" in out

    # ... against the fine-tuning model: the encoder matches, the decoder is dropped, a new head.
    assert model_info.main(["--checkpoint", str(tmp_path / "pre.pth"), "--model", "svfap_tiny_patch16_160"]) == 0
    out = capsys.readouterr().out
    report, ok = model_info.check_checkpoint(str(tmp_path / "pre.pth"), {"model": "svfap_tiny_patch16_160"})
    assert ok and sorted(report["missing"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert not report["mismatched"] and not report["unexpected"]
    assert all(k.startswith(("decoder.", "encoder_to_decoder.", "mask_token", "encoder.norm."))
               for k in report["dropped"])
    assert len(report["matched"]) + len(report["missing"]) == len(fine.state_dict())
    assert "dropped by the fine-tuning key mapping" in out and "new, to train: fc_norm.weight" in out

    # A different width: shape mismatches listed, does not load, exit status 1.
    assert model_info.main(["--checkpoint", str(tmp_path / "fine.pth"), "--embed_dim", "96", "--num_heads", "3"]) == 1
    out = capsys.readouterr().out
    assert "patch_embed.proj.weight: checkpoint (192, 3, 2, 16, 16), model (96, 3, 2, 16, 16)" in out
    assert "does not load" in out and "192 wide but the model is 96 wide" in out

    # A fine-tuned file against the pre-training model: the decoder is missing, the head unexpected.
    assert model_info.main(["--checkpoint", str(tmp_path / "fine.pth"), "--model",
                            "pretrain_svfap_tiny_patch16_160", "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "decoder.head.weight" in out and "missing from the file" in out and "head.weight" in out

    assert model_info.main(["--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err

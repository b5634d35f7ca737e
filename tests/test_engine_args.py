"""Command lines: release argument names, booleans that parse as booleans, and the shipped scripts."""
import pytest
import torch

import run_finetune
import run_pretrain
from engine import runtime


def test_booleans_parse_as_booleans():
    p = run_pretrain.get_args_parser()
    assert p.parse_args(["--normlize_target", "False"]).normlize_target is False
    assert p.parse_args(["--normlize_target", "True"]).normlize_target is True
    assert p.parse_args([]).normlize_target is True
    f = run_finetune.get_args_parser()
    assert f.parse_args(["--eval"]).eval is True
    assert f.parse_args(["--dist_eval", "false"]).dist_eval is False
    with pytest.raises(SystemExit):
        f.parse_args(["--eval", "maybe"])


@pytest.mark.parametrize("flag", ["--local_rank", "--local-rank"])
def test_local_rank_spellings(flag):
    assert run_finetune.get_args_parser().parse_args([f"{flag}=3"]).local_rank == 3


def test_release_defaults():
    a = run_pretrain.get_args_parser().parse_args([])
    assert (a.mask_ratio, a.lr, a.min_lr, a.opt_betas, a.mask_type) == (0.9, 3e-4, 1e-5, [0.9, 0.95], "tube")
    f = run_finetune.get_args_parser().parse_args(["--stage_depths", "8", "4", "2"])
    assert f.stage_depths == [8, 4, 2] and f.layer_decay == 0.75 and f.aa == "rand-m7-n4-mstd0.5-inc1"
    assert (f.mixup, f.cutmix, f.smoothing, f.reprob) == (0.8, 1.0, 0.1, 0.25)


def test_auto_precision_is_bf16_on_cpus_with_native_bf16(monkeypatch):
    caps = dict(torch.cpu.get_capabilities())
    here = "bf16" if caps.get("avx512_bf16") or caps.get("amx_bf16") else "none"
    assert runtime.precision("auto", "cpu") == here
    for flags, want in (({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"), ({}, "none")):
        fake = {**caps, "avx512_bf16": False, "amx_bf16": False, **flags}  # e.g. AVX-512 without BF16
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda fake=fake: fake)
        assert runtime.precision("auto", "cpu") == want
        assert runtime.precision("none", "cpu") == "none" and runtime.precision("fp16", "cpu") == "fp16"

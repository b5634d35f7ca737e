"""Command lines: release argument names, booleans that parse as booleans, and the shipped scripts."""
import argparse
import re

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


@pytest.mark.parametrize("entry", [run_finetune, run_pretrain])
def test_every_option_explains_itself(entry, capsys):
    parser = entry.get_args_parser()
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent, f"options without help text: {silent}"
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: " in text and text.count("(default: ") >= len(parser._actions) // 2
    import models
    from datasets.registry import DATASETS
    names = [n for n in models.MODEL_NAMES if n.startswith("pretrain_") == (entry is run_pretrain)]
    flat = " ".join(text.split()).replace("- ", "-")  # argparse wraps lines after hyphens
    assert all(n in flat for n in names)  # --model lists the valid names
    if entry is run_finetune:
        assert all(d in flat for d in DATASETS if d != "VOXCELEB2")


def test_every_tool_option_explains_itself():
    import importlib
    import pkgutil

    import tools
    checked = []
    for info in pkgutil.walk_packages(tools.__path__, "tools."):
        if info.name.endswith("__main__"):  # importing it would run the tool
            continue
        module = importlib.import_module(info.name)
        if not hasattr(module, "get_parser"):
            continue
        parser = module.get_parser()
        silent = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
                  if not a.help and a.dest != "help"]
        assert not silent, f"{info.name}: options without help text: {silent}"
        shown = [a for a in parser._actions if a.option_strings and a.default not in (None, argparse.SUPPRESS)]
        # argparse may wrap the line after "(default:"; None defaults: the help says what happens
        assert len(re.findall(r"\(default:\s", parser.format_help())) >= len(shown), info.name
        checked.append(info.name.removeprefix("tools."))
    assert {"predict", "extract_features", "visualize_reconstruction", "model_info", "export", "merge_lora",
            "benchmark.steps", "benchmark.loader", "benchmark.faces", "benchmark.learning"} <= set(checked)


def test_auto_precision_is_bf16_on_cpus_with_native_bf16(monkeypatch):
    caps = dict(torch.cpu.get_capabilities())
    here = "bf16" if caps.get("avx512_bf16") or caps.get("amx_bf16") else "none"
    assert runtime.precision("auto", "cpu") == here
    for flags, want in (({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"), ({}, "none")):
        fake = {**caps, "avx512_bf16": False, "amx_bf16": False, **flags}  # e.g. AVX-512 without BF16
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda fake=fake: fake)
        assert runtime.precision("auto", "cpu") == want
        assert runtime.precision("none", "cpu") == "none" and runtime.precision("fp16", "cpu") == "fp16"

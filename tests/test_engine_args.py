"""Command lines: release argument names, booleans that parse as booleans, and the shipped scripts."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import run_finetune
import run_pretrain

REPO = Path(__file__).resolve().parents[1]


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


def _dry_run(script):
    env = {**os.environ, "DRY_RUN": "1", "NPROC_PER_NODE": "4", "PRETRAINED": "pt.pth"}
    out = subprocess.run(["bash", str(REPO / script)], env=env, capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if "run_" in line]


@pytest.mark.parametrize("script", sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts").rglob("*.sh")
                                          if p.name != "common.sh" and "demo" not in p.parts))
def test_every_script_command_parses_with_our_parsers(script):
    commands = _dry_run(script)
    assert commands, f"{script} printed no run_*.py command"
    for cmd in commands:
        entry = next(i for i, tok in enumerate(cmd) if tok.endswith((".py",)) and "run_" in tok)
        parser = (run_pretrain if cmd[entry].endswith("run_pretrain.py") else run_finetune).get_args_parser()
        parser.parse_args(cmd[entry + 1:])  # exits (fails the test) on any unknown or malformed argument

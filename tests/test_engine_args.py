"""Command lines: release argument names, booleans that parse as booleans, and the shipped scripts."""
import argparse
import json
import re

import pytest
import torch

import models
import run_finetune
import run_pretrain
from datasets import demo
from engine import options, runtime


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


# -- commands as the release's scripts write them ------------------------------------------------------
# scripts/dfew/finetune_svfap_base.sh and scripts/voxceleb2/pretrain_svfap_base.sh of the release, with
# their shell variables filled in (DATA, MODEL, OUT are placeholders) ...
RELEASE_FINETUNE = (
    "--model svfap_base_patch16_160 --data_set DFEW --nb_classes 7 --data_path DATA --finetune MODEL "
    "--log_dir OUT --output_dir OUT --batch_size 16 --num_sample 1 --input_size 160 --short_side_size 160 "
    "--save_ckpt_freq 1000 --num_frames 16 --sampling_rate 4 --opt adamw --lr 1e-3 --opt_betas 0.9 0.999 "
    "--weight_decay 0.05 --epochs 100 --dist_eval --test_num_segment 2 --test_num_crop 2 --stage_depths 12 6 3 "
    "--temporal_kernel_size 2 --num_bottleneck_tokens 8 --num_workers 16").split()
RELEASE_PRETRAIN = (
    "--data_path DATA --mask_type tube --mask_ratio 0.9 --input_size 160 --model pretrain_svfap_base_patch16_160 "
    "--decoder_depth 4 --batch_size 64 --num_samples 1 --num_frames 16 --sampling_rate 4 --opt adamw "
    "--opt_betas 0.9 0.95 --warmup_epochs 5 --save_ckpt_freq 10 --epochs 100 --log_dir OUT --output_dir OUT "
    "--lr 3e-4 --stage_depths 12 6 3 --temporal_kernel_size 2 --num_bottleneck_tokens 8 --num_workers 16").split()
# ... then made tiny for a CPU (later options win), one optimisation step.
SMALL = ["--stage_depths", "1", "1", "1", "--input_size", "64", "--num_workers", "0",
         "--device", "cpu", "--amp", "none", "--epochs", "1", "--batch_size", "2", "--warmup_epochs", "0",
         "--print_freq", "1"]


def _filled(command, **values):
    return [str(values.get(a, a)) for a in command]


def test_the_release_and_videomae_spellings_parse():
    f = run_finetune.get_args_parser()
    a = f.parse_args(["--no_auto_resume", "--no_pin_mem", "--no_save_ckpt", "--use_cls", "--num_samples", "3",
                      "--disable_eval_during_finetuning", "--use_checkpoint"])
    assert (a.auto_resume, a.pin_mem, a.save_ckpt, a.use_mean_pooling, a.num_sample) == (False, False, False, False, 3)
    assert a.disable_eval_during_finetuning is True and a.grad_checkpointing is True
    a = f.parse_args(["--auto_resume", "False", "--pin_mem", "--save_ckpt", "True", "--use_mean_pooling", "False"])
    assert (a.auto_resume, a.pin_mem, a.save_ckpt, a.use_mean_pooling) == (False, True, True, False)
    assert f.parse_args([]).use_mean_pooling is True  # --use_cls absent: mean pooling, as in the release
    every_bool = [a.dest for a in f._actions if a.type is options.str2bool]
    assert len(every_bool) >= 16
    for dest in every_bool:  # every boolean has its --no_ form
        assert getattr(f.parse_args([f"--no_{dest}"]), dest) is False
    flags = [a.option_strings[0] for a in f._actions if a.nargs == 0 and a.dest != "help"]
    assert all(s.startswith("--no_") for s in flags if s != "--use_cls")  # no boolean without True/False
    p = run_pretrain.get_args_parser()
    assert p.parse_args(["--normalize_target", "False"]).normlize_target is False
    assert p.parse_args(["--no_normalize_target"]).normlize_target is False
    assert p.parse_args(["--no_normlize_target"]).normlize_target is False
    assert p.parse_args(["--num_sample", "2"]).num_samples == 2
    assert p.parse_args(["--no_auto_resume"]).auto_resume is False


def test_the_releases_pretraining_command_runs(demo, tmp_path, capsys):
    lines = (demo / "pretrain.csv").read_text().splitlines()[:2]  # one step of 2 videos x 2 clips
    (tmp_path / "pretrain.csv").write_text("\n".join(lines) + "\n")
    argv = _filled(RELEASE_PRETRAIN, DATA=tmp_path / "pretrain.csv", OUT=tmp_path / "out") + [
        "--no_auto_resume", "--num_sample", "2", *SMALL, "--model", "pretrain_svfap_tiny_patch16_160",
        "--decoder_depth", "1", "--data_root", demo]
    assert run_pretrain.cli(list(map(str, argv))) == 0
    out = capsys.readouterr().out
    assert "auto_resume\": false" in out and "num_samples\": 2" in out and "max mem" not in out  # CPU: no GPU memory
    log = [json.loads(line) for line in (tmp_path / "out" / "log.txt").read_text().splitlines()]
    model = models.create_model("pretrain_svfap_tiny_patch16_160", stage_depths=[1, 1, 1], img_size=64,
                                decoder_depth=1)
    assert log[0]["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "out" / "checkpoint-0.pth").is_file()


def test_the_releases_finetuning_command_runs(tmp_path, capsys):
    # --use_cls present (absent: test_the_release_and_videomae_spellings_parse and every other run)
    demo.generate(str(tmp_path / "dfew"), num_classes=7, size=64, frames=16, train_per_class=1, eval_per_class=1)
    train = (tmp_path / "dfew" / "train.csv").read_text().splitlines()
    (tmp_path / "dfew" / "train.csv").write_text("\n".join(train[:2]) + "\n")  # one step
    pre = models.create_model("pretrain_svfap_tiny_patch16_160", stage_depths=[1, 1, 1], img_size=64)
    torch.save({"model": pre.state_dict(), "epoch": 99, "args": argparse.Namespace(
        model="pretrain_svfap_tiny_patch16_160", input_size=64, num_frames=16)}, tmp_path / "checkpoint-99.pth")
    out_dir = tmp_path / "out"
    argv = _filled(RELEASE_FINETUNE, DATA=tmp_path / "dfew", MODEL=tmp_path / "checkpoint-99.pth", OUT=out_dir) + [
        "--no_auto_resume", "--use_cls", "--num_sample", "2", *SMALL, "--short_side_size", "64",
        "--model", "svfap_tiny_patch16_160",
        "--data_root", tmp_path / "dfew", "--no_save_ckpt", "--disable_eval_during_finetuning", "--no_pin_mem"]
    assert run_finetune.cli(list(map(str, argv))) == 0
    out = capsys.readouterr().out
    assert "\"use_mean_pooling\": false" in out and "\"num_sample\": 2" in out
    assert "loaded " in out and "Val:" not in out and "no validation: the last epoch is tested" in out
    assert "Epoch: [0] [0/1]" in out and "(7 videos, 2x2 views)" in out
    assert not list(out_dir.glob("*.pth"))  # --no_save_ckpt: no checkpoint at all
    log = json.loads((out_dir / "log.txt").read_text().splitlines()[0])
    model = models.create_model("svfap_tiny_patch16_160", stage_depths=[1, 1, 1], img_size=64,
                                use_mean_pooling=False)
    assert log["n_parameters"] == sum(p.numel() for p in model.parameters()) and "val_uar" not in log
    assert (out_dir / "metrics.json").is_file()


def test_a_stop_with_no_save_ckpt_says_nothing_was_saved(tmp_path, capsys):
    from types import SimpleNamespace

    from engine.checkpoint import Checkpointer
    from engine.cli import EXIT_REQUEUE
    from engine.interrupt import stop_run
    checkpointer = Checkpointer(str(tmp_path), save=False)
    assert stop_run(SimpleNamespace(signal="SIGTERM"), checkpointer, lambda *a, **k: {}, 2, 5) == EXIT_REQUEUE
    assert "nothing was saved (--no_save_ckpt)" in capsys.readouterr().out and not list(tmp_path.iterdir())

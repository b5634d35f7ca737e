"""End to end on the demo data with a tiny model: pre-train -> fine-tune -> evaluate, distributed
evaluation, kill-and-resume, and the regression and clip-averaged tasks."""
import json
import os
import signal
import socket
import subprocess
import time

import pandas as pd

import run_finetune
import run_pretrain
from conftest import FT, PY, REPO, TINY, run_in_process


def ok(cli, *argv):
    return run_in_process(cli, *argv).stdout


def test_pretrain_writes_a_resumable_checkpoint(pretrained):
    import torch
    ckpt = torch.load(pretrained, weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "epoch", "args"} and ckpt["epoch"] == 0
    assert isinstance(ckpt["args"], dict) and ckpt["args"]["model"] == "pretrain_svfap_tiny_patch16_160"
    log = [json.loads(line) for line in (pretrained.parent / "log.txt").read_text().splitlines()]
    assert log[-1]["epoch"] == 0 and log[-1]["train_loss"] > 0
    assert list((pretrained.parent / "tb").glob("events.out.tfevents*"))


def test_auto_precision_pretrains_in_bf16_on_a_cpu_with_native_bf16(demo, tmp_path):
    import torch
    caps = torch.cpu.get_capabilities()
    want = "bf16" if caps.get("avx512_bf16") or caps.get("amx_bf16") else "none"
    stdout = ok(run_pretrain.cli, "--model", "pretrain_svfap_tiny_patch16_160", "--decoder_depth", "1",
                "--data_path", demo / "pretrain.csv", "--data_root", demo, "--batch_size", "4", "--epochs", "1",
                "--output_dir", tmp_path, *TINY, "--amp", "auto")
    assert f'"amp": "{want}"' in stdout
    assert f"precision: {want} (--amp auto on cpu" in stdout  # the choice is said at the start
    log = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert 0 < log[-1]["train_loss"] < 10


def test_finetune_from_pretraining_writes_reports(finetuned):
    out, proc = finetuned
    assert "loaded" in proc.stdout and "new (trained from scratch)" in proc.stdout
    assert "checkpoint-best.pth by uar on val.csv; testing the last epoch" in proc.stdout  # the demo has a val.csv
    for name in ("checkpoint-best.pth", "checkpoint-0.pth", "pred.csv", "metrics.json", "confusion_matrix.png",
                 "log.txt"):
        assert (out / name).is_file(), name
    pred = pd.read_csv(out / "pred.csv")
    assert len(pred) == 12 and {"id", "target", "prediction"} <= set(pred.columns)
    scores = pred[[c for c in pred.columns if c.startswith("score_")]].to_numpy()
    assert scores.shape[1] == 6 and abs(scores.sum(1) - 1).max() < 1e-5
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["uar"] <= 100 and metrics["num_samples"] == 12
    tested = {k: metrics["provenance"].get(k) for k in ("checkpoint", "epoch", "selection")}
    assert tested == {"checkpoint": str(out / "checkpoint-0.pth"), "epoch": 0, "selection": "none (last epoch)"}
    assert len(metrics["provenance"]["checkpoint_sha256"]) == 64
    assert "uar" in proc.stdout and "war" in proc.stdout  # the printed table


def test_class_names_beside_the_csvs_reach_every_report(demo, finetuned, capsys):
    """A custom dataset's classes.txt (the demo writes one) names the classes in pred.csv,
    metrics.json and the checkpoint, so the tools show them too."""
    import torch

    from tools import predict
    out, _ = finetuned
    names = (demo / "classes.txt").read_text().split()
    assert len(names) == 6 and names != [str(i) for i in range(6)]
    pred = pd.read_csv(out / "pred.csv")
    assert [c for c in pred.columns if c.startswith("score_")] == [f"score_{n}" for n in names]
    assert json.loads((out / "metrics.json").read_text())["class_names"] == names
    assert torch.load(out / "checkpoint-best.pth", weights_only=True)["args"]["class_names"] == names
    video = pd.read_csv(out / "pred.csv")["id"][0]
    assert predict.main(["--checkpoint", str(out / "checkpoint-best.pth"), str(demo / video), "--device", "cpu"]) == 0
    assert any(n in capsys.readouterr().out for n in names)


def test_eval_only_and_two_process_evaluation_agree(demo, finetuned, tmp_path):
    out, _ = finetuned
    # 11 videos x 3 views = 33 items: the 2-process sampler pads one duplicate that must be dropped
    split = tmp_path / "split"
    split.mkdir()
    lines = (demo / "test.csv").read_text().splitlines()[:11]
    (split / "test.csv").write_text("\n".join(lines) + "\n")
    common = [*FT, "--data_path", split, "--data_root", demo, "--eval", "True", "--test_num_segment", "3",
              "--finetune", out / "checkpoint-best.pth"]
    ok(run_finetune.cli, *common, "--output_dir", tmp_path / "one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                           str(REPO / "run_finetune.py"), *map(str, common), "--output_dir", str(tmp_path / "two")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["num_samples"] == two["num_samples"] == 11
    for key in ("uar", "war", "weighted_f1", "confusion_matrix"):
        assert one[key] == two[key], key
    p1 = pd.read_csv(tmp_path / "one" / "pred.csv")
    p2 = pd.read_csv(tmp_path / "two" / "pred.csv")
    pd.testing.assert_frame_equal(p1, p2, atol=1e-5, check_exact=False)


def test_killed_run_resumes_from_last_complete_checkpoint(demo, pretrained, tmp_path):
    out = tmp_path / "run"
    args = [*FT, "--data_path", demo, "--data_root", demo, "--epochs", "3", "--save_ckpt_freq", "1",
            "--finetune", pretrained, "--output_dir", out, "--auto_resume", "True"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([PY, str(REPO / "run_finetune.py"), *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-0.pth").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.2)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a checkpoint cut short on disk (newer than the real ones) must never be picked up
    good = sorted(out.glob("checkpoint-[0-9].pth"))[-1]
    (out / "checkpoint-7.pth").write_bytes(good.read_bytes()[:1000])
    text = ok(run_finetune.cli, *args)
    assert "skipping unreadable" in text and "checkpoint-7.pth" in text
    assert f"resumed from {good}" in text
    start = int(good.stem.split("-")[1]) + 1
    assert f"from epoch {start}" in text
    assert (out / "checkpoint-2.pth").is_file() and (out / "pred.csv").is_file()
    epochs = [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()]
    assert epochs[-1] == 2


def test_regression_task(demo, tmp_path):
    split = tmp_path / "reg"
    split.mkdir()
    for name in ("train", "test"):
        rows = []
        for line in (demo / f"{name}.csv").read_text().splitlines():
            path, label = line.split()
            rows.append(f"{path} {int(label) / 5:.3f} {1 - int(label) / 5:.3f}")
        (split / f"{name}.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    stdout = ok(run_finetune.cli, "--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--task", "regression",
                "--nb_classes", "2", "--batch_size", "4", *TINY, "--data_path", split, "--data_root", demo,
                "--epochs", "1", "--output_dir", out, "--mixup", "0", "--cutmix", "0", "--smoothing", "0")
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"pcc", "ccc", "acc", "mse", "ccc_per_target"} <= set(metrics)
    assert set(metrics["ccc_per_target"]) == {"target0", "target1"}
    assert (out / "scatter_target0.png").is_file()
    pred = pd.read_csv(out / "pred.csv")
    assert {"target_target0", "pred_target1"} <= set(pred.columns) and len(pred) == 12
    assert "ccc" in stdout
    # no val.csv: said out loud, the test split's mse monitored, nothing selected
    assert "no val.csv: nothing is selected, the last epoch is tested; test ccc" in stdout
    assert not (out / "checkpoint-best.pth").exists()


def test_clip_averaged_classification(demo, finetuned, tmp_path):
    out, _ = finetuned
    split = tmp_path / "clips"
    split.mkdir()
    lines = (demo / "test.csv").read_text().splitlines()
    (split / "test.csv").write_text("\n".join(lines + lines) + "\n")  # every video as two clips
    ev = tmp_path / "eval"
    ok(run_finetune.cli, "--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--task",
       "clip_classification", "--nb_classes", "6", *TINY, "--data_path", split, "--data_root", demo, "--eval",
       "--finetune", out / "checkpoint-best.pth", "--output_dir", ev, "--video_id_regex", "^(.*)$")
    pred = pd.read_csv(ev / "pred.csv")
    assert len(pred) == 12 and pred["id"].is_unique  # 24 clips averaged into 12 videos
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["num_samples"] == 12 and "weighted_f1" in metrics

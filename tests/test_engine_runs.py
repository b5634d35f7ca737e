"""What a run does when things go wrong on a cluster: a stop signal mid-epoch, a resume with other
options, an evaluation with other clip settings, ranks with their own folders, a full disk, a
user's typo. Each case ends with a clear message and loses nothing. A run is a subprocess where
signals or several processes are what is tested, and an in-process ``cli(argv)`` call otherwise."""
import json
import os
import shutil
import signal
import socket
import subprocess

import pytest
import torch

import run_finetune
import run_pretrain
from conftest import FT, PY, REPO, TINY, HeldTrace, in_process

EXIT_REQUEUE = 75


def data(demo):
    return ["--data_path", demo, "--data_root", demo]


def trace(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stop_signal_mid_epoch_resumes_exactly_where_it_stopped(demo, pretrained, tmp_path):
    """SIGTERM mid-epoch writes a checkpoint and exits 75; the rerun takes exactly the remaining steps
    of that epoch, with the samples and learning rates of a run that was never stopped."""
    common = [*FT, *data(demo), "--finetune", pretrained, "--epochs", "2", "--save_ckpt_freq", "10",
              "--warmup_epochs", "1", "--min_lr", "1e-4"]
    status, stdout, _ = in_process(run_finetune.cli, [*common, "--output_dir", tmp_path / "whole",
                                                     "--trace_steps", tmp_path / "whole.jsonl"])
    assert status == 0, stdout[-3000:]
    whole = trace(tmp_path / "whole.jsonl")
    steps_per_epoch = len(whole) // 2
    assert steps_per_epoch >= 4 and len({w["lr"] for w in whole}) > 2  # warm-up then cosine: lr changes

    out, log = tmp_path / "stopped", tmp_path / "stopped.jsonl"
    # Held after epoch 1's second step: the stop lands at its second or third step, on any machine.
    held = HeldTrace(log, (tmp_path / "whole.jsonl").read_text().splitlines(), steps_per_epoch + 2)
    args = [PY, str(REPO / "run_finetune.py"), *map(str, common), "--output_dir", str(out), "--trace_steps", str(log)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    held.wait_until_held(proc)
    proc.send_signal(signal.SIGTERM)
    held.release()
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == EXIT_REQUEUE, output[-3000:]
    assert "SIGTERM received" in output and "Traceback" not in output
    ckpt = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert ckpt["resume"]["epoch"] == 1 and 0 < ckpt["resume"]["iteration"] < steps_per_epoch
    assert not (out / "checkpoint-1.pth").exists()

    status, stdout, _ = in_process(run_finetune.cli, [*common, "--output_dir", out, "--trace_steps", log])
    assert status == 0, stdout[-3000:]
    assert f"(next: epoch 1, iteration {ckpt['resume']['iteration']})" in stdout
    assert held.lines() == whole  # same step count, step numbers, lr at every step, samples seen
    assert [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()] == [0, 1]
    assert (out / "checkpoint-1.pth").is_file() and not (out / "checkpoint-latest.pth").exists()


def test_resume_with_a_changed_option_refuses_and_says_how_to_proceed(demo, pretrained, tmp_path):
    out = tmp_path / "run"
    common = [*FT, *data(demo), "--finetune", pretrained, "--epochs", "1", "--output_dir", out]
    assert in_process(run_finetune.cli, common)[0] == 0
    status, _, err = in_process(run_finetune.cli, [*common, "--lr", "4e-3", "--warmup_lr", "1e-5"])
    assert status == 2 and err.startswith("error: ") and "--lr" in err and "--warmup_lr" in err
    assert "--output_dir" in err and "--force_resume True" in err
    status, stdout, _ = in_process(run_finetune.cli, [*common, "--lr", "4e-3", "--warmup_lr", "1e-5",
                                                     "--force_resume", "True"])
    assert status == 0 and "WARNING: resuming" in stdout and "resumed from" in stdout
    # Where things are written or how fast they are read may change freely.
    status, stdout, _ = in_process(run_finetune.cli, [*common, "--num_workers", "1", "--print_freq", "3",
                                                     "--save_ckpt_freq", "7"])
    assert status == 0, stdout[-3000:]


def test_eval_builds_the_model_and_clips_the_checkpoint_was_trained_with(demo, finetuned, tmp_path):
    out, _ = finetuned
    no_clip_flags = ["--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--nb_classes", "6",
                     "--batch_size", "4", "--num_workers", "0", "--device", "cpu", "--amp", "none", *data(demo),
                     "--eval", "True",
                     "--finetune", out / "checkpoint-0.pth"]
    status, stdout, _ = in_process(run_finetune.cli, [*no_clip_flags, "--output_dir", tmp_path / "eval"])
    assert status == 0 and "from the checkpoint: " in stdout and "input_size=64" in stdout
    assert "stage_depths=[1, 1, 1]" in stdout
    first, again = (json.loads(p.read_text()) for p in (out / "metrics.json", tmp_path / "eval" / "metrics.json"))
    assert first["uar"] == again["uar"] and first["confusion_matrix"] == again["confusion_matrix"]

    status, _, err = in_process(run_finetune.cli, [*no_clip_flags, "--num_frames", "8"])
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "--num_frames 8 (the checkpoint records 16)" in err
    assert "--force_config" in err
    status, stdout, _ = in_process(run_finetune.cli, no_clip_flags)
    assert status == 0 and "no --output_dir: the reports" in stdout


def test_training_without_output_dir_says_nothing_will_be_saved(demo, pretrained):
    status, stdout, _ = in_process(run_finetune.cli, [*FT, *data(demo), "--finetune", pretrained, "--epochs", "1"])
    assert status == 0 and "WARNING: no --output_dir: nothing of this run" in stdout.splitlines()[0]


def test_retention_and_stale_temporary_files(demo, pretrained, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint-5.pth.tmp4242").write_bytes(b"\0" * (1 << 20))  # left by a run killed mid-save
    (out / "notes.tmp123").write_text("not ours")
    status, stdout, _ = in_process(run_finetune.cli, [*FT, *data(demo), "--finetune", pretrained, "--epochs", "3",
                                                     "--save_ckpt_freq", "1", "--keep_last", "1", "--output_dir", out])
    assert status == 0 and "removed 1 partial checkpoint file(s)" in stdout
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint-2.pth", "checkpoint-best.pth"]
    assert (out / "notes.tmp123").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_their_own_output_folders_finish(demo, pretrained, tmp_path):
    """Node-local scratch: only rank 0's folder holds checkpoints; rank 0 decides and shares."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        args = [*FT, *data(demo), "--finetune", pretrained, "--epochs", "1", "--dist_timeout", "3",
                "--output_dir", tmp_path / f"rank{rank}"]
        procs.append(subprocess.Popen([PY, str(REPO / "run_finetune.py"), *map(str, args)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    assert (tmp_path / "rank0" / "checkpoint-best.pth").is_file() and (tmp_path / "rank0" / "metrics.json").is_file()
    assert not list((tmp_path / "rank1").glob("checkpoint*"))
    assert "testing the last epoch's model (checkpoint-0.pth)" in outputs[0]


def latin1_csv(tmp_path, demo):
    split = tmp_path / "latin1"
    split.mkdir()
    for name in ("train", "val", "test"):
        (split / f"{name}.csv").write_bytes(((demo / f"{name}.csv").read_text() + "caf\xe9.mp4 1\n").encode("latin-1"))
    return split


@pytest.mark.parametrize("case", ["missing csv", "unknown model", "missing checkpoint", "update_freq 0",
                                  "random-bytes checkpoint", "latin-1 csv", "unknown dataset"])
def test_user_mistakes_end_in_one_error_line(demo, tmp_path, case):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    args = {"missing csv": ["--data_path", tmp_path / "nowhere"],
            "unknown model": [*data(demo), "--model", "svfap_huge"],
            "missing checkpoint": [*data(demo), "--finetune", tmp_path / "nope.pth"],
            "update_freq 0": [*data(demo), "--update_freq", "0"],
            "random-bytes checkpoint": [*data(demo), "--finetune", junk],
            "latin-1 csv": ["--data_path", latin1_csv(tmp_path, demo), "--data_root", demo],
            "unknown dataset": [*data(demo), "--data_set", "DFEV"]}[case]
    status, stdout, stderr = in_process(run_finetune.cli, [*FT, "--epochs", "1", *args])
    want = {"missing csv": "annotation file not found", "unknown model": "unknown --model 'svfap_huge'",
            "missing checkpoint": "checkpoint not found", "update_freq 0": "--update_freq must be at least 1",
            "random-bytes checkpoint": "not a complete PyTorch checkpoint",
            "latin-1 csv": "train.csv:25: not UTF-8 text", "unknown dataset": "unknown dataset 'DFEV'"}[case]
    assert status == 2, stdout[-2000:] + stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and want in last, stderr[-2000:]


def test_pretraining_mistakes_end_in_one_error_line(demo, tmp_path):
    status, _, err = in_process(run_pretrain.cli, ["--model", "pretrain_svfap_nope", "--data_path",
                                                  demo / "pretrain.csv", *TINY])
    assert status == 2 and err.strip().startswith("error: unknown --model")
    status, _, err = in_process(run_pretrain.cli, ["--model", "pretrain_svfap_tiny_patch16_160", "--data_path",
                                                  tmp_path / "x.csv", *TINY])
    assert status == 2 and "annotation file not found" in err and len(err.strip().splitlines()) == 1
    status, _, err = in_process(run_pretrain.cli, ["--model", "pretrain_svfap_tiny_patch16_160", "--data_path",
                                                  demo / "pretrain.csv", *TINY, "--num_samples", "0",
                                                  "--output_dir", tmp_path / "ns0"])
    assert status == 2 and err.strip() == "error: --num_samples must be at least 1, not 0"
    assert not (tmp_path / "ns0").exists()  # refused before anything is written


def test_a_full_disk_is_named_and_leaves_no_partial_file(demo, pretrained, tmp_path):
    """A real 1 MB file system (a tmpfs in a private mount namespace) as --output_dir."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a private mount namespace here (unshare --user --mount refused)")
    out = tmp_path / "tiny"
    out.mkdir()
    cmd = " ".join(["mount -t tmpfs -o size=1m tmpfs", str(out), "&&", PY, str(REPO / "run_finetune.py"),
                    *map(str, [*FT, *data(demo), "--finetune", pretrained, "--epochs", "1", "--output_dir", out]),
                    "; rc=$?; ls -a", str(out), "; exit $rc"])
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: no space left on device for ") and "MB free" in error
    listing = proc.stdout.strip().splitlines()[-8:]
    assert not any(".tmp" in name for name in listing), listing


def test_a_signal_to_one_rank_stops_both_at_the_same_step(demo, pretrained, tmp_path):
    """Ranks that disagree: SIGUSR1 reaches rank 1 only; both must stop together (no rank left
    waiting in a collective), rank 0 writes the checkpoint, and both exit 75."""
    port = free_port()
    log = tmp_path / "trace.jsonl"
    held = HeldTrace(log)  # rank 0 waits at its first step's trace line while rank 1 is signalled
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        args = [*FT, *data(demo), "--finetune", pretrained, "--epochs", "4", "--dist_timeout", "3",
                "--batch_size", "2", "--output_dir", tmp_path / "out", "--trace_steps", log]
        procs.append(subprocess.Popen([PY, str(REPO / "run_finetune.py"), *map(str, args)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    held.wait_until_held(procs[0], writer=procs[0].pid)
    assert procs[1].poll() is None
    procs[1].send_signal(signal.SIGUSR1)
    held.release()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [EXIT_REQUEUE] * 2, outputs[0][-2000:] + outputs[1][-2000:]
    assert "SIGUSR1 received" in outputs[1] and "Traceback" not in outputs[0] + outputs[1]
    ckpt = torch.load(tmp_path / "out" / "checkpoint-latest.pth", weights_only=True)
    done = len(held.lines())  # rank 0's iterations: it stopped right after the last one
    assert (ckpt["resume"]["epoch"], ckpt["resume"]["iteration"]) == divmod(done, 6)

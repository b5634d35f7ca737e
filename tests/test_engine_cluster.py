"""Runs that survive a cluster, through the paths users take: the scripts' launcher
(engine.launch, torchrun) and srun pass stop signals to every training process, which save and
exit 75, and so does the launcher; pre-training resumes exactly; a finished run's rerun trains
nothing; one run per output folder; data edited between a stop and the restart, or different on
two ranks, is refused."""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time

import torch

import run_finetune
import run_pretrain
from conftest import FT, PY, REPO, TINY, HeldTrace, in_process
from engine.checkpoint import LAST_EPOCH
from engine.launch import child_pids
from engine.rundir import _process_start

EXIT_REQUEUE = 75
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PRETRAIN = ["--model", "pretrain_svfap_tiny_patch16_160", "--decoder_depth", "1", "--batch_size", "4", *TINY]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trace(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree(pid):
    """``{pid: start time}`` of ``pid``'s descendants, to tell later whether any is left."""
    found, todo = {}, [pid]
    while todo:
        for kid in child_pids(todo.pop()):
            found[kid] = _process_start(kid)
            todo.append(kid)
    return found


def left_running(processes):
    return [pid for pid, start in processes.items() if start is not None and _process_start(pid) == start]


def wait_for(condition, proc, what):
    deadline = time.time() + 300
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}: {proc.stdout.read()[-3000:] if proc.stdout else ''}")
        time.sleep(0.01)


def test_pretraining_stopped_through_the_scripts_launcher_resumes_like_an_uninterrupted_run(demo, tmp_path):
    """bash scripts/voxceleb2/pretrain_small.sh (engine.launch, torchrun): SIGUSR1 to the launcher
    mid-epoch -> every process saves, the launcher and the script exit 75, no process is left; the
    rerun takes exactly the steps, lrs and samples of a run never stopped."""
    out, log = tmp_path / "run", tmp_path / "run.jsonl"
    env = {**ENV, "MODEL": "pretrain_svfap_tiny_patch16_160", "DATA_ROOT": str(demo),
           "SPLIT_DIR": str(demo / "pretrain.csv"), "OUTPUT_DIR": str(out), "NPROC_PER_NODE": "1",
           "TOTAL_BATCH": "4", "EPOCHS": "2", "WARMUP_EPOCHS": "1", "INPUT_SIZE": "64", "DECODER_DEPTH": "1",
           "FACE_CROP": "False", "DEVICE": "cpu", "MASTER_PORT": str(free_port())}
    extra = ["--stage_depths", "1", "1", "1", "--num_workers", "1", "--amp", "none", "--print_freq", "5",
             "--trace_steps", str(log)]
    script = ["bash", "scripts/voxceleb2/pretrain_small.sh", *extra]

    # The uninterrupted run: the script's own command, in this process.
    printed = subprocess.run(script, env={**env, "DRY_RUN": "1"}, cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    printed = shlex.split(printed)
    argv = printed[printed.index("run_pretrain.py") + 1:]
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "whole")
    argv[argv.index("--trace_steps") + 1] = str(tmp_path / "whole.jsonl")
    assert in_process(run_pretrain.cli, argv)[0] == 0
    whole = trace(tmp_path / "whole.jsonl")
    steps = len(whole) // 2
    assert steps >= 4 and len({w["lr"] for w in whole}) > 2  # warm-up then cosine

    proc = subprocess.Popen(script, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= steps + 2, proc, "epoch 1")
    (launcher,) = child_pids(proc.pid)
    processes = {launcher: _process_start(launcher), **tree(launcher)}
    (worker,) = child_pids(launcher)
    os.kill(worker, signal.SIGSTOP)  # hold it inside epoch 1 while the signal goes through
    os.kill(launcher, signal.SIGUSR1)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("launcher: SIGUSR1 passed on"):
            break
    os.kill(worker, signal.SIGCONT)
    output = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == EXIT_REQUEUE, output[-3000:]
    assert "SIGUSR1 received" in output and "Traceback" not in output
    assert not left_running(processes)
    ckpt = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert ckpt["resume"]["epoch"] == 1 and 0 < ckpt["resume"]["iteration"] < steps
    assert not (out / "run.lock").exists()

    rerun = subprocess.run(script, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"(next: epoch 1, iteration {ckpt['resume']['iteration']})" in rerun.stdout
    assert trace(log) == whole  # the same steps, lr at every step and samples as the run never stopped
    assert (out / "checkpoint-1.pth").is_file() and not (out / "checkpoint-latest.pth").exists()


def test_a_stop_during_the_final_test_through_the_launcher_exits_75_and_the_rerun_tests(demo, pretrained,
                                                                                       finetuned, tmp_path):
    """SIGTERM to the launcher while a finished fine-tuning run's rerun tests its last epoch's model:
    75, no report written, nothing left running; the next rerun writes the reports."""
    fixture_out, _ = finetuned
    out = tmp_path / "run"
    shutil.copytree(fixture_out, out)
    fifo = tmp_path / "trace"
    os.mkfifo(fifo)  # the run opens its trace file after setting up: it waits there for a reader
    before = (out / "metrics.json").read_bytes()
    command = [PY, "-m", "engine.launch", "--standalone", "--nproc_per_node", "1", "run_finetune.py", *FT,
               "--data_path", demo, "--data_root", demo, "--epochs", "1", "--finetune", pretrained,
               "--output_dir", out]
    proc = subprocess.Popen([*map(str, command), "--trace_steps", str(fifo)], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # "args:" comes after the stop handlers are in place
        seen.append(line)
        if line.startswith("args:"):
            break
    processes = {proc.pid: _process_start(proc.pid), **tree(proc.pid)}
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("launcher: SIGTERM passed on"):
            break
    with open(fifo):  # let the run go on: it has nothing to train, and tests
        rest = proc.communicate(timeout=300)[0]
    output = "".join(seen) + rest
    assert proc.returncode == EXIT_REQUEUE, output[-3000:]
    assert "during the final test" in output and "Traceback" not in output
    assert (out / "metrics.json").read_bytes() == before and not list(out.glob("*.tmp*"))
    assert not left_running(processes)

    # The rerun: the launcher's part is above; the run itself in this process.
    status, stdout, stderr = in_process(run_finetune.cli, command[command.index("run_finetune.py") + 1:])
    assert status == 0, stdout[-3000:] + stderr[-3000:]
    assert "testing the last epoch's model (checkpoint-0.pth)" in stdout
    provenance = json.loads((out / "metrics.json").read_text())["provenance"]
    assert provenance["checkpoint"] == str(out / "checkpoint-0.pth") and provenance["selection"] == LAST_EPOCH


DUMMY = """import os, signal, sys, time
got = []
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, lambda n, f: got.append(signal.Signals(n).name))
open(os.path.join(sys.argv[1], "ready" + os.environ["RANK"]), "w").write(str(os.getpid()))
while not got:
    time.sleep(0.01)
open(os.path.join(sys.argv[1], "got" + os.environ["RANK"]), "w").write(got[0])
sys.exit(75)
"""


def test_every_stop_signal_reaches_every_worker_through_the_launcher_and_the_script(tmp_path):
    """Two workers that exit 75 when signalled: SIGINT and SIGHUP to the launcher, and SIGTERM to a
    script that runs it (scripts/common.sh), reach both; the launcher and the script exit 75 and no
    process is left."""
    worker = tmp_path / "worker.py"
    worker.write_text(DUMMY)
    for sig, through_script in ((signal.SIGINT, False), (signal.SIGHUP, False), (signal.SIGTERM, True)):
        folder = tmp_path / sig.name
        folder.mkdir()
        if through_script:
            command = ["bash", "-c", f'source scripts/common.sh; svfap_torchrun --standalone "{worker}" "{folder}"']
        else:
            command = [PY, "-m", "engine.launch", "--standalone", "--nproc_per_node", "2", str(worker), str(folder)]
        env = {**ENV, "NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port())}
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        wait_for(lambda: (folder / "ready0").exists() and (folder / "ready1").exists(), proc, "the workers")
        processes = {proc.pid: _process_start(proc.pid), **tree(proc.pid)}
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == EXIT_REQUEUE, (sig, output[-2000:])
        assert [(folder / f"got{r}").read_text() for r in range(2)] == [sig.name] * 2
        assert "Traceback" not in output and not left_running(processes)


def slurm_task(rank, args, port, group=None):
    env = {**ENV, "SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank),
           "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    kw = {"process_group": 0 if group is None else group}  # one process group, as srun's tasks get one signal
    return subprocess.Popen([PY, str(REPO / "run_pretrain.py"), *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_srun_tasks_stopped_together_save_and_exit_75_and_the_rerun_completes(demo, tmp_path):
    """srun's way: one task per rank started with SLURM's variables, SIGTERM to all of them (SLURM
    signals the job's processes): both save and exit 75; the rerun finishes the run."""
    out, log = tmp_path / "run", tmp_path / "trace.jsonl"
    args = [*PRETRAIN, "--data_path", demo / "pretrain.csv", "--data_root", demo, "--epochs", "2",
            "--dist_timeout", "3", "--output_dir", out, "--trace_steps", log]
    held = HeldTrace(log)  # rank 0 waits at its first step's trace line while the signal goes to both
    port = free_port()
    first = slurm_task(0, args, port)
    procs = [first, slurm_task(1, args, port, group=first.pid)]
    held.wait_until_held(first, writer=first.pid)
    os.killpg(first.pid, signal.SIGTERM)
    held.release()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [EXIT_REQUEUE] * 2, outputs[0][-2000:] + outputs[1][-2000:]
    assert "Traceback" not in "".join(outputs)
    assert torch.load(out / "checkpoint-latest.pth", weights_only=True)["resume"]["epoch"] < 2

    port = free_port()
    first = slurm_task(0, args, port)
    procs = [first, slurm_task(1, args, port, group=first.pid)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert (out / "checkpoint-1.pth").is_file() and "resumed from" in outputs[0]
    steps = len((demo / "pretrain.csv").read_text().splitlines()) // (4 * 2)  # batch 4 on each of 2 ranks
    assert [(t["epoch"], t["iteration"]) for t in held.lines()] == [(e, i) for e in range(2) for i in range(steps)]


def test_one_run_per_folder_kill_9_and_edited_annotations(demo, tmp_path):
    """A second run into a folder in use refuses and names the holder; after kill -9 the lock is
    taken over and pre-training resumes from its last checkpoint; the finished run's rerun trains
    nothing; a rerun over an edited annotation file is refused, naming it, unless --force_resume."""
    data = tmp_path / "data.csv"
    shutil.copy(demo / "pretrain.csv", data)
    out, log = tmp_path / "run", tmp_path / "trace.jsonl"
    args = [*PRETRAIN, "--data_path", data, "--data_root", demo, "--epochs", "3", "--save_ckpt_freq", "1",
            "--output_dir", out, "--trace_steps", log]
    first = subprocess.Popen([PY, str(REPO / "run_pretrain.py"), *map(str, args)], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (out / "checkpoint-0.pth").exists(), first, "epoch 0's checkpoint")

    status, _, err = in_process(run_pretrain.cli, args)
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"is in use by another run (pid {first.pid} on {socket.gethostname()}" in err
    first.kill()
    first.communicate()
    assert (out / "run.lock").exists()  # kill -9 leaves it

    status, stdout, _ = in_process(run_pretrain.cli, args)
    assert status == 0, stdout[-2000:]
    assert "taking over the lock" in stdout and "no longer running" in stdout
    assert "resumed from" in stdout and (out / "checkpoint-2.pth").is_file() and not (out / "run.lock").exists()
    done = len(trace(log))
    assert in_process(run_pretrain.cli, args)[0] == 0 and len(trace(log)) == done  # finished: trains nothing

    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[: len(lines) * 6 // 10]))  # 40% of the rows gone
    status, _, err = in_process(run_pretrain.cli, args)
    assert status == 2 and "the annotation files changed since" in err and str(data) in err
    assert f"{len(lines) * 6 // 10} rows" in err and f"{len(lines)} rows" in err
    status, stdout, _ = in_process(run_pretrain.cli, [*args, "--force_resume", "True"])
    assert status == 0 and "WARNING: resuming" in stdout


def test_ranks_that_read_different_annotation_files_refuse_at_once(demo, pretrained, tmp_path):
    """Rank 1 with a stale copy (fewer training rows, other test labels): both ranks refuse at
    start, naming the ranks and files, instead of mixing targets or waiting for each other."""
    stale = tmp_path / "stale"
    shutil.copytree(demo, stale, ignore=shutil.ignore_patterns("*.mp4", "frames", "videos"))
    train = (demo / "train.csv").read_text().splitlines(keepends=True)
    (stale / "train.csv").write_text("".join(train[:-5]))
    test = [line.split() for line in (demo / "test.csv").read_text().splitlines()]
    (stale / "test.csv").write_text("".join(f"{p} {(int(y) + 1) % 6}\n" for p, y in test))
    port = free_port()
    procs = []
    for rank, folder in enumerate((demo, stale)):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        args = [*FT, "--data_path", folder, "--data_root", demo, "--finetune", pretrained, "--epochs", "1",
                "--dist_timeout", "2", "--output_dir", tmp_path / f"out{rank}"]
        procs.append(subprocess.Popen([PY, str(REPO / "run_finetune.py"), *map(str, args)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 2 and "Traceback" not in stderr, stdout[-2000:] + stderr[-2000:]
    message = results[0][1]  # rank 0 says it for both (the others' prints are silenced)
    assert message.startswith("error: the processes of this run read different annotation files")
    assert f"train: rank 0 reads {demo / 'train.csv'} ({len(train)} rows" in message
    assert f"rank 1 reads {stale / 'train.csv'} ({len(train) - 5} rows" in message
    assert "test: rank 0" in message and "loading" not in results[0][0]  # refused before the model was built


def test_the_demo_runs_twice_in_the_same_folders(demo, tmp_path):
    """The README's first command, run again: every step resumes its finished run and exits 0."""
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    # What is tested is the rerun, not the learning: the fewest rows the script's batches take (one
    # pre-training batch of 8, one fine-tuning batch of 16) and one clip of each class to evaluate.
    for name, rows in (("pretrain", 8), ("train", 16), ("val", 6), ("test", 6)):
        lines = (data / f"{name}.csv").read_text().splitlines(keepends=True)
        (data / f"{name}.csv").write_text("".join(lines[:rows]))
    assert sorted(line.split()[1] for line in (data / "test.csv").read_text().splitlines()) == list("012345")
    env = {**ENV, "DATA": str(data), "OUT": str(tmp_path / "out"), "PT_EPOCHS": "1", "FT_EPOCHS": "1",
           "NUM_WORKERS": "0", "PYTHON": PY}
    for attempt in range(2):
        proc = subprocess.run(["bash", "scripts/demo/run_demo.sh"], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, (attempt, proc.stdout[-3000:] + proc.stderr[-3000:])
    assert "resumed from" in proc.stdout and (tmp_path / "out" / "eval" / "metrics.json").is_file()

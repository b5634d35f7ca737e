"""scripts/slurm_job.sh, the job script the README gives for SLURM: SLURM's warning signal goes to
the batch shell only (--signal=B:USR1), so the job script must pass it on through the recipe script
and the launcher to every worker, and requeue the job when the run stopped to be resumed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable

WORKER = """import os, signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda n, f: got.append("USR1"))
open(os.path.join(sys.argv[1], "ready" + os.environ["RANK"]), "w").close()
while not got:
    time.sleep(0.01)
open(os.path.join(sys.argv[1], "got" + os.environ["RANK"]), "w").write(got[0])
sys.exit(75)
"""
# A recipe script as scripts/<dataset>/*.sh are: the shared helpers, then the launcher.
RECIPE = """set -euo pipefail
source scripts/common.sh
svfap_torchrun --standalone "$@"
"""


def job(tmp_path, port, recipe, *args):
    """Start the job script as sbatch would (a new session, SLURM_JOB_ID set, scontrol on the PATH,
    here one that records its arguments); returns the process and the file scontrol writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "PYTHON": PY,
           "NPROC_PER_NODE": "2", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "job.out", "w+")  # a file, not a pipe: a process left behind cannot hold the test up
    proc = subprocess.Popen(["bash", "scripts/slurm_job.sh", str(recipe), *map(str, args)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log = log
    return proc, calls


def finish(proc, timeout):
    """The job's exit status and output; whatever of it is still running afterwards is killed."""
    try:
        proc.wait(timeout=timeout)
    finally:
        left = group_alive(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.log.seek(0)
    return proc.returncode, proc.log.read(), left


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_batch_shells_warning_reaches_every_worker_and_the_job_requeues(tmp_path, free_tcp_port):
    worker, recipe = tmp_path / "worker.py", tmp_path / "recipe.sh"
    worker.write_text(WORKER)
    recipe.write_text(RECIPE)
    proc, calls = job(tmp_path, free_tcp_port, recipe, worker, tmp_path)
    deadline = time.monotonic() + 120
    while not ((tmp_path / "ready0").exists() and (tmp_path / "ready1").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, finish(proc, 1)
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # the batch shell alone, as --signal=B:USR1 does
    status, output, left = finish(proc, 120)
    assert status == 75 and not left, output
    assert [(tmp_path / f"got{r}").read_text() for r in range(2)] == ["USR1", "USR1"]
    assert calls.read_text().split() == ["requeue", "4242"] and "requeueing job 4242" in output
    assert "Traceback" not in output


def test_a_run_that_ends_otherwise_is_not_requeued(tmp_path, free_tcp_port):
    recipe = tmp_path / "recipe.sh"
    recipe.write_text("echo 'error: something the user must fix' >&2\nexit 2\n")
    proc, calls = job(tmp_path, free_tcp_port, recipe)
    status, output, _ = finish(proc, 60)
    assert status == 2 and "error: something the user must fix" in output
    assert not calls.exists()


def test_without_a_script_or_away_from_the_repository_root_it_says_so(tmp_path):
    proc = subprocess.run(["bash", "scripts/slurm_job.sh"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: which script?")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm_job.sh"), "x.sh"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "repository root" in proc.stderr


def test_dry_run_reaches_the_script(tmp_path):
    """DRY_RUN=1 prints the recipe script's command, as it does without the job script."""
    env = {**os.environ, "DRY_RUN": "1", "NPROC_PER_NODE": "1", "SLURM_JOB_ID": "4242"}
    proc = subprocess.run(["bash", "scripts/slurm_job.sh", "scripts/voxceleb2/pretrain_base.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "run_pretrain.py" in proc.stdout and "--mask_ratio 0.9" in proc.stdout, proc

import array
import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # fixed test data travels with the repository (see its README)
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

# Tests are sized for a 2-core CPU; more threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_dir():
    if not (DATA / "golden").is_dir() or not (DATA / "reference_splits").is_dir():
        pytest.fail(f"the repository's test data is missing: {DATA}")
    return DATA


@pytest.fixture(scope="session")
def opencv_data():
    if not (OPENCV_DATA / "Megamind.avi").is_file():
        pytest.fail("Debian's opencv-doc sample videos are missing; run setup.sh (it installs opencv-doc)")
    return OPENCV_DATA


# -- the entry points on a tiny demo set, shared by the run-level tests ---------------------------

PY = sys.executable
# fp32 (--amp none): the run-level tests compare numbers across runs, process counts and batchings,
# which --amp auto would put in bf16 on CPUs with native bf16.
TINY = ["--stage_depths", "1", "1", "1", "--input_size", "64", "--num_frames", "16", "--num_workers", "0",
        "--print_freq", "5", "--device", "cpu", "--warmup_epochs", "0", "--amp", "none"]
FT = ["--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--nb_classes", "6", "--batch_size", "4",
      "--lr", "2e-3", *TINY]


def run(script, *args, check=True, **kw):
    """Run an entry point of the repository; with ``check``, a non-zero exit fails with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([PY, str(REPO / script), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def in_process(cli, argv):
    """Run an entry point's ``cli(argv)`` in this process (no interpreter start, no imports to
    repeat): ``(exit status, stdout, stderr)``; argparse's exit is caught as its status. One torch
    thread, as the subprocesses get. A bug raises here, as it would print a traceback there."""
    import torch

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli([str(a) for a in argv])
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return status, out.getvalue(), err.getvalue()


class HeldTrace:
    """A ``--trace_steps`` path that holds a run after its first ``hold`` steps, however fast or busy
    the machine: a named pipe of one page, filled ahead but for the exact bytes of those steps' lines
    (``expected``: an uninterrupted run's trace lines), so the run's next trace write waits until the
    test reads. A stop signal sent while it waits is honoured at step ``hold - 1`` or ``hold`` (the
    run checks for a stop right after each trace line). ``hold`` 0: the run waits at its first line."""

    def __init__(self, path, expected=(), hold=0):
        os.mkfifo(path)
        # Read and write ends from the start: the run's open does not wait, and it never sees an end.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.size = fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, os.sysconf("SC_PAGE_SIZE"))
        room = sum(len(line.encode()) + 1 for line in expected[:hold])
        assert room < self.size, "the held lines must fit in one page"
        os.write(self.fd, b"\n" * (self.size - room))
        self.data, self._done, self._thread = b"", threading.Event(), None

    def _queued(self):
        n = array.array("i", [0])
        fcntl.ioctl(self.fd, termios.FIONREAD, n)
        return n[0]

    def wait_until_held(self, proc, writer=None):
        """Until the pipe is full, or (``writer``: the pid of the process that writes the trace) until
        that process waits to write in it."""
        def held():
            if writer is None:
                return self._queued() == self.size
            with open(f"/proc/{writer}/wchan") as f:
                return "pipe_write" in f.read()
        deadline = time.time() + 600  # a hang, not a timing: a working run gets there in a few steps
        while not held():
            assert proc.poll() is None and time.time() < deadline, "the run ended or hung before it was held"
            time.sleep(0.01)

    def _read(self):
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            self.data += chunk

    def release(self):
        """Let the run go on: from now on the pipe is read as the run writes."""
        def drain():
            while not self._done.wait(0.01):
                self._read()
        self._thread = threading.Thread(target=drain, daemon=True)
        self._thread.start()

    def lines(self):
        """Every trace line written so far (stops reading; the pipe is then closed)."""
        if self._thread is not None:
            self._done.set()
            self._thread.join()
        self._read()
        os.close(self.fd)
        return [json.loads(line) for line in self.data.decode().splitlines() if line]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    subprocess.run([PY, "-m", "datasets.demo", "--out", str(root), "--train_per_class", "4", "--eval_per_class",
                    "2", "--frames", "32", "--size", "64"], check=True, cwd=REPO, capture_output=True)
    return root


def run_in_process(cli, *argv):
    """An entry point's ``cli`` in this process that must succeed: its output as ``run`` gives it."""
    status, stdout, stderr = in_process(cli, argv)
    if status != 0:
        raise AssertionError(f"{cli.__module__} failed ({status}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, status, stdout, stderr)


@pytest.fixture(scope="session")
def pretrained(demo, tmp_path_factory):
    import run_pretrain

    out = tmp_path_factory.mktemp("pretrain")
    proc = run_in_process(run_pretrain.cli, "--model", "pretrain_svfap_tiny_patch16_160", "--decoder_depth", "1",
                          "--data_path", demo / "pretrain.csv", "--data_root", demo, "--batch_size", "4",
                          "--epochs", "1", "--output_dir", out, *TINY)
    assert "loss" in proc.stdout
    return out / "checkpoint-0.pth"


@pytest.fixture(scope="session")
def finetuned(demo, pretrained, tmp_path_factory):
    import run_finetune

    out = tmp_path_factory.mktemp("finetune")
    proc = run_in_process(run_finetune.cli, *FT, "--data_path", demo, "--data_root", demo, "--epochs", "1",
                          "--finetune", pretrained, "--output_dir", out)
    return out, proc

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    subprocess.run([PY, "-m", "datasets.demo", "--out", str(root), "--train_per_class", "4", "--eval_per_class",
                    "2", "--frames", "32", "--size", "64"], check=True, cwd=REPO, capture_output=True)
    return root


@pytest.fixture(scope="session")
def pretrained(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    proc = run("run_pretrain.py", "--model", "pretrain_svfap_tiny_patch16_160", "--decoder_depth", "1",
               "--data_path", demo / "pretrain.csv", "--data_root", demo, "--batch_size", "4", "--epochs", "1",
               "--output_dir", out, *TINY)
    assert "loss" in proc.stdout
    return out / "checkpoint-0.pth"


@pytest.fixture(scope="session")
def finetuned(demo, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    proc = run("run_finetune.py", *FT, "--data_path", demo, "--data_root", demo, "--epochs", "1",
               "--finetune", pretrained, "--output_dir", out)
    return out, proc

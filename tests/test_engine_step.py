"""The optimisation step: gradient accumulation and the non-finite loss stop."""
import argparse
import platform
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from engine.optim import Schedules
from engine.train_step import NonFiniteLossError, Stepper


def _setup(update_freq, lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for g in opt.param_groups:
        g["decays"] = False
    args = argparse.Namespace(update_freq=update_freq, clip_grad=None, epochs=1, warmup_epochs=0, warmup_steps=-1,
                              min_lr=lr, warmup_lr=lr, weight_decay=0.0, weight_decay_end=None)
    sched = Schedules(args, opt, steps_per_epoch=4)
    return model, opt, Stepper(model, opt, sched, None, args)


def test_accumulation_equals_one_big_batch():
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    model_a, _, step_a = _setup(update_freq=2)
    for it in range(4):  # micro-batches of 2, an optimiser step every 2
        sl = slice(2 * it, 2 * it + 2)
        step_a(torch.nn.functional.mse_loss(model_a(x[sl]), y[sl]), it, step_a.start(it, 0, 2))
    model_b, _, step_b = _setup(update_freq=1)
    for it in range(2):  # batches of 4
        sl = slice(4 * it, 4 * it + 4)
        step_b(torch.nn.functional.mse_loss(model_b(x[sl]), y[sl]), it, step_b.start(it, 0, 2))
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_non_finite_loss_stops_with_step_and_lr():
    model, _, stepper = _setup(update_freq=1)
    x = torch.randn(2, 4)
    for it in range(4):
        loss = model(x).sum() * (float("nan") if it == 2 else 1.0)
        stepper(loss, it, stepper.start(it, 0, 4))
    with pytest.raises(NonFiniteLossError, match=r"step 2 \(lr 1\.000e-01, loss scale None\)"):
        stepper.check_finite()


_RSS_SCRIPT = """
import os, sys, torch
from engine.runtime import keep_freed_host_memory
if sys.argv[1] == "keep":
    assert keep_freed_host_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
blocks = [torch.ones(1 << 20) for _ in range(40)]  # a step's activations: 40 blocks of 4 MB
held = rss_mb()
del blocks
print(held - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's allocator only")
def test_freed_host_memory_stays_in_the_process():
    """By default glibc hands a step's freed 160 MB back to the kernel (the next step faults it
    in again, page by page); after keep_freed_host_memory it stays mapped for reuse."""
    def released_mb(mode):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, mode], cwd=REPO, capture_output=True,
                             text=True, timeout=120, check=True).stdout
        return float(out.split()[-1])
    assert released_mb("default") > 120
    assert released_mb("keep") < 10


def test_progress_lines_show_the_gpu_memory_peak_only_on_a_gpu(monkeypatch, capsys):
    from engine.logger import MetricLogger

    def lines():
        for _ in MetricLogger().log_every(range(2), 1, "Epoch: [0]", samples_per_iter=4):
            pass
        return [line for line in capsys.readouterr().out.splitlines() if "[" in line and "/2]" in line]

    assert not torch.cuda.is_initialized() and all("max mem" not in line for line in lines())  # a CPU run
    # A run that has used the GPU (no GPU here: torch's two answers stand in for one).
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1536 * 2 ** 20)
    assert all(line.endswith("max mem: 1536 MB") for line in lines())

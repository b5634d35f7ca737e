"""Checkpoint files: a failed write says what failed and leaves the previous checkpoint and no
partial file; resumption finds the furthest checkpoint and compares the options."""
import argparse
import os

import pytest
import torch

from engine.checkpoint import (LATEST, CheckpointSaveError, Checkpointer, changed_args, resume_position,
                               save_checkpoint, training_state)
from models import load_checkpoint_file


def test_a_write_that_fails_for_lack_of_space_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint-3.pth"
    save_checkpoint(str(path), {"model": {"w": torch.ones(4)}, "epoch": 2})
    before = path.read_bytes()
    tmp = tmp_path / f"checkpoint-3.pth.tmp{os.getpid()}"
    tmp.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    with pytest.raises(CheckpointSaveError, match="no space left on device for .*checkpoint-3.pth: it needs about"):
        save_checkpoint(str(path), {"model": {"w": torch.zeros(1 << 16)}, "epoch": 3})
    assert not os.path.lexists(tmp), "the partial file must be removed"
    assert path.read_bytes() == before and load_checkpoint_file(path)["epoch"] == 2


def test_a_checkpoint_larger_than_the_free_space_is_not_started(tmp_path, monkeypatch):
    import shutil
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 << 20))  # 10 MB left
    with pytest.raises(CheckpointSaveError, match=r"needs about 17 MB, 10 MB free in .*nothing was written"):
        save_checkpoint(str(tmp_path / "c.pth"), {"model": {"w": torch.zeros(4 << 20)}})
    assert os.listdir(tmp_path) == []


def _state(epoch, **kw):
    return training_state(torch.nn.Linear(2, 2), args={"lr": 0.1}, epoch=epoch, **kw)


def test_resume_takes_the_checkpoint_furthest_into_training(tmp_path, capsys):
    ck = Checkpointer(str(tmp_path), keep_last=2)
    for epoch in range(4):
        ck.save_epoch(epoch, _state(epoch))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2.pth", "checkpoint-3.pth"]  # --keep_last 2
    ck.save(LATEST, _state(3, resume={"epoch": 4, "iteration": 6}))
    (tmp_path / "checkpoint-9.pth").write_bytes(b"cut short")
    path = ck.find_resume("", auto_resume=True)
    assert path.endswith(LATEST) and "skipping unreadable" in capsys.readouterr().out
    assert resume_position(load_checkpoint_file(path)) == (4, 6)
    ck.save_epoch(4, _state(4))  # an epoch checkpoint supersedes the stop checkpoint
    assert not (tmp_path / LATEST).exists() and ck.find_resume("", True).endswith("checkpoint-4.pth")
    assert resume_position({"epoch": 7}) == (8, 0)  # a release checkpoint: the epoch it finished


def test_changed_args_ignores_run_control_only():
    recorded = {"lr": 0.001, "epochs": 100, "output_dir": "a", "num_workers": 8, "model": "m", "stage_depths": [1, 2]}
    now = argparse.Namespace(lr=0.002, epochs=100, output_dir="b", num_workers=2, model="m", stage_depths=(1, 2))
    assert changed_args(recorded, now) == [("lr", 0.001, 0.002)]

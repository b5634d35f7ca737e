"""Bad samples: warned about and replaced by default, fatal in strict mode or
past the cap, and listed by `python -m datasets.check`."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

from datasets import (BadSampleError, BadSampleWarning, PretrainDataset, TooManyBadSamples,
                      VideoClsDataset)
from datasets import check
from conftest import REPO
from datasets.demo import write_mp4
BAD = ["missing.mp4", "zero.mp4", "cut.mp4", "empty_dir"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """good0, missing, good1, zero-byte, truncated, good2, empty frame folder."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for k in range(3):
        write_mp4(str(root / f"good{k}.mp4"), rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    (root / "zero.mp4").write_bytes(b"")
    data = (root / "good0.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    (root / "empty_dir").mkdir()
    rows = ["good0.mp4 0", "missing.mp4 1", "good1.mp4 1", "zero.mp4 2", "cut.mp4 3",
            "good2.mp4 2", "empty_dir 4"]
    (root / "mixed.csv").write_text("\n".join(rows) + "\n")
    (root / "good.csv").write_text("good0.mp4 0\ngood1.mp4 1\n")
    return root


def small(cls, csv, **kw):
    args = dict(input_size=32, num_frames=4, sampling_rate=2)
    return cls(str(csv), **args, **kw)


def test_training_iteration_warns_and_replaces(mixed):
    ds = small(VideoClsDataset, mixed / "mixed.csv", mode="train", max_bad_fraction=0.9)
    with pytest.warns(BadSampleWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    messages = "\n".join(str(w.message) for w in record)
    for name in BAD:
        assert name in messages
    # Replacement = the next readable sample in file order (deterministic).
    assert [index for _, _, index in items] == [0, 2, 2, 5, 5, 5, 0]
    assert [int(t) for _, t, _ in items] == [0, 1, 1, 2, 2, 2, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # known-bad samples are skipped silently afterwards
        assert ds[1][2] == 2

    pre = small(PretrainDataset, mixed / "mixed.csv", max_bad_fraction=0.9)
    with pytest.warns(BadSampleWarning, match="cut.mp4"):
        assert pre[4][0].shape == (4, 32, 32, 3)  # uint8 frames (T, H, W, 3)


def test_strict_mode_raises_at_once(mixed):
    ds = small(VideoClsDataset, mixed / "mixed.csv", mode="train", strict=True)
    assert ds[0][2] == 0
    with pytest.raises(BadSampleError, match=r"missing.mp4 \(annotation line 2\): .*missing"):
        ds[1]
    with pytest.raises(BadSampleError, match="zero.mp4"):
        small(VideoClsDataset, mixed / "mixed.csv", mode="test", strict=True)[3 * 2]


def test_cap_stops_with_the_list(mixed):
    ds = small(VideoClsDataset, mixed / "mixed.csv", mode="validation", max_bad_fraction=0.3)
    with pytest.warns(BadSampleWarning):
        with pytest.raises(TooManyBadSamples) as err:
            for i in range(len(ds)):
                ds[i]
    text = str(err.value)
    assert "3 of 7 samples (42.86%) are unreadable" in text and "missing.mp4" in text and "zero.mp4" in text and "cut.mp4" in text


def test_check_lists_every_bad_sample(mixed, capsys):
    assert check.main([str(mixed / "mixed.csv")]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "3 ok, 4 bad"
    bad_lines = [line for line in lines if line.startswith("BAD ")]
    assert len(bad_lines) == 4
    for name, line_no, reason in zip(BAD, (2, 4, 5, 7), ("missing", "0 bytes", "cannot open", "no .jpg")):
        assert any(name in b and f"(line {line_no})" in b and reason in b for b in bad_lines), name


def test_check_command_exit_status(mixed):
    run = [sys.executable, "-m", "datasets.check"]
    bad = subprocess.run(run + [str(mixed / "mixed.csv"), "--backend", "pyav"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout.strip().endswith("3 ok, 4 bad")
    good = subprocess.run(run + [str(mixed / "good.csv"), "--data_root", str(mixed)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and good.stdout.strip() == "2 ok, 0 bad"


def _loader_epochs(ds, epochs, workers=2, seed=0):
    import torch
    from torch.utils.data import DataLoader
    from engine.loader import EpochSampler
    sampler = EpochSampler(ds, 1, 0, seed)
    loader = DataLoader(ds, batch_size=16, sampler=sampler, num_workers=workers, persistent_workers=True,
                        drop_last=True)
    seen = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            seen += batch[2].tolist()
    return seen, torch


@pytest.mark.parametrize("seed", [0, 1])
def test_the_cap_counts_each_bad_file_once_over_all_workers_and_epochs(mixed, tmp_path, seed):
    """2 bad files in 242 (0.83%) stay under the 1% cap, whatever the workers and epochs."""
    rows = ["good0.mp4 0"] * 120 + ["missing_a.mp4 1"] + ["good1.mp4 1"] * 120 + ["missing_b.mp4 2"]
    csv = tmp_path / "242.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = small(VideoClsDataset, csv, mode="train", data_root=str(mixed), max_bad_fraction=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadSampleWarning)
        seen, _ = _loader_epochs(ds, epochs=3, seed=seed)
    assert len(seen) == 3 * (242 // 16) * 16 and not {120, 241} & set(seen)
    assert ds.guard.known_bad.nonzero().flatten().tolist() == [120, 241]  # found by the workers, seen here

    rows.append("missing_c.mp4 0")  # 3 in 243 (1.23%) is over the cap, and the message says so
    csv.write_text("\n".join(rows) + "\n")
    ds = small(VideoClsDataset, csv, mode="train", data_root=str(mixed), max_bad_fraction=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadSampleWarning)
        with pytest.raises(TooManyBadSamples, match=r"3 of 243 samples \(1\.23%\) are unreadable, more than "
                                                    r"--max_bad_fraction 0\.01 \(1\.00%\)"):
            _loader_epochs(ds, epochs=3, seed=seed)

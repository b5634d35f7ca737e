"""The built-in demo set, the dataset builders, and a 2-worker DataLoader epoch."""
import argparse
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datasets import (build_dataset, build_pretraining_dataset, multiple_samples_collate,
                      read_annotations)
from datasets.build import has_validation_split
from datasets.demo import CLASSES, MOTION, PARTS, activations, generate, render


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    counts = generate(str(out), seed=0, num_classes=6, size=32, frames=24,
                      train_per_class=4, eval_per_class=1)
    assert counts == {"train": 24, "val": 6, "test": 6}
    return out


def test_demo_layout(demo):
    assert (demo / "classes.txt").read_text().split() == CLASSES[:6]
    for split, n in (("train", 24), ("val", 6), ("test", 6)):
        samples = read_annotations(demo / f"{split}.csv", num_classes=6)
        assert len(samples) == n and {s.label for s in samples} == set(range(6))
        assert all(os.path.exists(s.path) for s in samples)
        text = (demo / f"{split}.csv").read_text()
        assert ".mp4 " in text and "frames/" in text and str(demo) not in text  # both kinds, relative
    pre = read_annotations(demo / "pretrain.csv")
    assert len(pre) == 24 and {s.label for s in pre} == {0}


def test_demo_is_deterministic_and_class_is_in_the_motion():
    a = render(2, 16, 32, np.random.default_rng([7, 0, 1]))
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render(2, 16, 32, np.random.default_rng([7, 0, 1])))
    # Per-frame activations have about the same distribution in every class,
    # while the direction of change over the clip tells the class.
    rng = np.random.default_rng(0)
    for label in range(len(CLASSES)):
        draws = [activations(label, 32, rng) for _ in range(300)]
        part, direction = MOTION[label]
        for p in PARTS:
            values = np.concatenate([d[p] for d in draws])
            assert 0.35 < values.mean() < 0.65 and values.std() > 0.2, (label, p)
        change = np.array([d[part][-1] - d[part][0] for d in draws])
        if direction > 0:
            assert (change > 0.3).all()
        elif direction < 0:
            assert (change < -0.3).all()


def namespace(demo, **kw):
    args = dict(data_path=str(demo), data_root="", prefix_map=None, num_frames=8, sampling_rate=2,
                input_size=32, short_side_size=32, test_num_segment=2, test_num_crop=2,
                aa="rand-m7-n4-mstd0.5-inc1", reprob=0.25, remode="pixel", recount=1, num_sample=1,
                mask_type="tube", mask_ratio=0.75, nb_classes=6, num_targets=None, backend="decord")
    args.update(kw)
    return argparse.Namespace(**args)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_dataloader_two_workers_full_epoch(demo, backend):
    ds = build_dataset("train", namespace(demo, backend=backend))
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, timeout=120,
                        persistent_workers=True, drop_last=False)
    for _ in range(2):  # a second epoch in the same workers: readers closed cleanly in between
        seen = 0
        for clips, targets, indices in loader:
            assert clips.shape[1:] == (8, 32, 32, 3) and clips.dtype == torch.uint8
            assert targets.dtype == torch.int64
            seen += len(indices)
        assert seen == len(ds) == 24


def test_builders(demo, tmp_path):
    args = namespace(demo, num_sample=2)
    train = build_dataset("train", args)
    batch = multiple_samples_collate([train[0], train[1]])
    assert batch[0].shape == (4, 8, 32, 32, 3) and batch[1].shape == (4,)
    test = build_dataset("test", args)
    assert len(test) == 6 * 4 and test.num_views == 4
    assert len(test[5]) == 4 and test[5][2:] == (1, 1)
    val = build_dataset("val", args)
    assert val.mode == "validation" and len(val) == 6

    # No val.csv: nothing to select on; the test split is read as validation reads (one clip per
    # video) to monitor training.
    assert has_validation_split(str(demo))
    for name in ("train.csv", "test.csv", "classes.txt"):
        (tmp_path / name).write_text((demo / name).read_text())
    assert not has_validation_split(str(tmp_path))
    monitor = build_dataset("test", namespace(demo, data_path=str(tmp_path), data_root=str(demo)), mode="validation")
    assert monitor.mode == "validation" and len(monitor) == 6
    assert [s.path for s in monitor.samples] == [s.path for s in test.samples]

    pre = build_pretraining_dataset(namespace(demo))   # folder: takes pretrain.csv
    clip, mask, _ = pre[0]
    assert clip.shape == (8, 32, 32, 3) and mask.shape == (4 * 2 * 2,) and int(mask.sum()) == 4 * 3
    minimal = argparse.Namespace(data_path=str(demo / "pretrain.csv"))  # every other field defaulted
    assert build_pretraining_dataset(minimal)[0][0].shape == (16, 160, 160, 3)

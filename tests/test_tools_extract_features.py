"""tools/extract_features.py: shapes for fine-tuned and pre-trained checkpoints, determinism, the
test-split view, resuming after an interruption, unreadable videos, and sharding under torchrun."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import timm
import torch

import models  # noqa: F401
from datasets import VideoClsDataset, read_annotations
from datasets.demo import generate
from datasets.transforms import normalize
from engine.checkpoint import save_checkpoint, training_state
from tools import extract_features as ef

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = {"input_size": 64, "num_frames": 8, "sampling_rate": 2, "stage_depths": [1, 1, 1], "embed_dim": 64,
        "num_heads": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate(str(out), train_per_class=1, eval_per_class=1, frames=24)
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    fine = timm.create_model("svfap_tiny_patch16_160", num_classes=6, img_size=64, all_frames=8,
                             stage_depths=(1, 1, 1), embed_dim=64, num_heads=2)
    save_checkpoint(str(d / "fine.pth"), training_state(fine, args={**ARGS, "model": "svfap_tiny_patch16_160", "nb_classes": 6,
                                                     "data_set": "custom"}))
    pre = timm.create_model("pretrain_svfap_tiny_patch16_160", img_size=64, num_frames=8, stage_depths=(1, 1, 1),
                            encoder_embed_dim=64, encoder_num_heads=2)
    save_checkpoint(str(d / "pre.pth"), training_state(pre, args={**ARGS, "model": "pretrain_svfap_tiny_patch16_160"}))
    return {"fine": d / "fine.pth", "pre": d / "pre.pth", "fine_model": fine.eval()}


def extract(demo, ckpt, out, *extra):
    return ef.main(["--checkpoint", str(ckpt), "--csv", str(demo / "test.csv"), "--output_dir", str(out),
                    "--num_workers", "0", "--device", "cpu", *extra])


@pytest.mark.parametrize("kind,features,windows,shape", [
    ("fine", "pooled", "centre", (64,)),
    ("fine", "tokens", "centre", (1, 16, 64)),      # last stage: 4 time steps halved twice, 4x4 positions
    ("pre", "pooled", "sliding", (64,)),
    ("pre", "tokens", "uniform", (4, 16, 64)),      # fused stages at stage-1 time resolution
])
def test_shapes_and_index(demo, ckpts, tmp_path, kind, features, windows, shape):
    assert extract(demo, ckpts[kind], tmp_path, "--features", features, "--windows", windows,
                   "--shard_size", "4") == 0
    feats, index = ef.load_features(str(tmp_path))
    clips_per_video = {"centre": 1, "sliding": 2, "uniform": 2}[windows]  # 24 frames, span 15
    assert feats.shape == (6 * clips_per_video, *shape) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    paths = [s.path for s in read_annotations(str(demo / "test.csv"))]
    assert list(index["path"]) == [p for p in paths for _ in range(clips_per_video)]
    assert list(index["label"]) == [i % 6 for i in range(6) for _ in range(clips_per_video)]
    assert list(index["window"]) == list(range(clips_per_video)) * 6
    if windows == "sliding":  # the last window ends on the last frame
        assert list(index["start_frame"][:2]) == [0, 9] and list(index["end_frame"][:2]) == [14, 23]
    if windows == "uniform":  # the test split's: 12 grid frames (0, 2, ..., 22), windows 4 grid steps apart
        assert list(index["start_frame"][:2]) == [0, 8] and list(index["end_frame"][:2]) == [14, 22]
    assert sorted(os.listdir(tmp_path / "shards")) == [f"shard_0000{k}.{e}" for k in (0, 1) for e in ("csv", "npy")]


def test_pooled_features_are_the_classifiers_input_on_the_one_view_test(demo, ckpts, tmp_path):
    assert extract(demo, ckpts["fine"], tmp_path) == 0
    feats, _ = ef.load_features(str(tmp_path))
    ds = VideoClsDataset(str(demo / "test.csv"), mode="test", num_frames=8, sampling_rate=2, input_size=64,
                         test_num_segment=1, test_num_crop=1)
    with torch.no_grad():
        clips = normalize(torch.stack([ds[i][0] for i in range(len(ds))]))  # as the engine does on the device
        _, expected = ckpts["fine_model"](clips, save_feature=True)
    np.testing.assert_allclose(feats, expected.numpy(), atol=1e-5)


def test_deterministic_and_batch_independent(demo, ckpts, tmp_path):
    runs = []
    for name, batch in (("a", "4"), ("b", "4"), ("c", "1")):
        assert extract(demo, ckpts["pre"], tmp_path / name, "--windows", "sliding", "--batch_size", batch) == 0
        runs.append(ef.load_features(str(tmp_path / name))[0])
    assert np.array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], runs[2], atol=1e-5)


def test_resume_after_interruption(demo, ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    common = ("--windows", "sliding", "--shard_size", "2")
    # A job stopped after one shard (as a time-limited job would be), which also left a half-written file.
    assert extract(demo, ckpts["fine"], out, *common, "--max_shards", "1") == 3
    assert "rerun the same command" in capsys.readouterr().out
    assert not (out / "index.csv").exists() and ef.shard_done(str(out), 0) and not ef.shard_done(str(out), 1)
    (out / "shards" / "shard_00001.npy.tmp999.npy").write_bytes(b"cut")
    first = (out / "shards" / "shard_00000.npy").stat().st_mtime_ns
    assert extract(demo, ckpts["fine"], out, *common) == 0
    assert "1 of this process's 3 done" in capsys.readouterr().out
    assert (out / "shards" / "shard_00000.npy").stat().st_mtime_ns == first  # not recomputed
    assert extract(demo, ckpts["fine"], tmp_path / "fresh", *common) == 0
    resumed, index = ef.load_features(str(out))
    fresh, fresh_index = ef.load_features(str(tmp_path / "fresh"))
    assert np.array_equal(resumed, fresh) and index.equals(fresh_index)
    # Different settings must not be mixed into the same folder.
    assert extract(demo, ckpts["fine"], out, "--windows", "centre", "--shard_size", "2") == 2
    assert "other settings" in capsys.readouterr().err


def test_a_checkpoint_replaced_at_the_same_path_is_not_mixed_into_its_shards(demo, ckpts, tmp_path, capsys):
    ckpt, out = tmp_path / "model.pth", tmp_path / "out"
    shutil.copy(ckpts["fine"], ckpt)
    assert extract(demo, ckpt, out, "--shard_size", "2", "--max_shards", "1") == 3
    other = timm.create_model("svfap_tiny_patch16_160", num_classes=6, img_size=64, all_frames=8,
                              stage_depths=(1, 1, 1), embed_dim=64, num_heads=2)  # the same settings, other weights
    save_checkpoint(str(ckpt), training_state(other, args={**ARGS, "model": "svfap_tiny_patch16_160", "nb_classes": 6,
                                                           "data_set": "custom"}))
    capsys.readouterr()
    assert extract(demo, ckpt, out, "--shard_size", "2") == 2
    err = capsys.readouterr().err
    assert f"holds features of another file at {ckpt}" in err and "would mix two models" in err
    assert not ef.shard_done(str(out), 1)


def test_unreadable_video_is_listed_not_fatal(demo, ckpts, tmp_path, capsys):
    lines = (demo / "test.csv").read_text().splitlines()
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    csv = tmp_path / "with_bad.csv"
    csv.write_text("\n".join(lines[:2] + [f"{tmp_path / 'broken.mp4'} 0"] + lines[2:]) + "\n")
    out = tmp_path / "out"
    assert ef.main(["--checkpoint", str(ckpts["fine"]), "--csv", str(csv), "--data_root", str(demo),
                    "--output_dir", str(out), "--num_workers", "1"]) == 1
    feats, index = ef.load_features(str(out))
    assert feats.shape == (6, 64) and list(index["video"]) == [0, 1, 3, 4, 5, 6]
    failed = pd.read_csv(out / "failed.csv")
    assert list(failed["path"]) == [str(tmp_path / "broken.mp4")] and "broken.mp4" in failed["error"][0]
    assert "1 unreadable videos in failed.csv" in capsys.readouterr().out
    assert ef.main(["--checkpoint", str(ckpts["fine"]), "--csv", str(csv), "--data_root", str(demo),
                    "--output_dir", str(tmp_path / "strict"), "--num_workers", "0", "--strict"]) == 2


def test_errors(demo, ckpts, tmp_path, capsys):
    assert ef.main(["--checkpoint", str(ckpts["fine"]), "--csv", str(tmp_path / "no.csv"),
                    "--output_dir", str(tmp_path / "o")]) == 2
    assert "annotation file not found" in capsys.readouterr().err
    assert ef.main(["--checkpoint", str(ckpts["fine"]), "--output_dir", str(tmp_path / "o")]) == 2
    assert "nothing to extract" in capsys.readouterr().err
    assert extract(demo, ckpts["pre"], tmp_path / "o", "--stage_depths", "2 1 1") == 2
    assert "--stage_depths [2, 1, 1] (the checkpoint records [1, 1, 1])" in capsys.readouterr().err
    assert extract(demo, ckpts["pre"], tmp_path / "o", "--stage_depths", "2 1 1", "--force_config") == 2
    assert "does not fit the model" in capsys.readouterr().err


def test_folder_input_and_torchrun_shards(demo, ckpts, tmp_path):
    """Two CPU processes under torchrun split the shards (k % 2) and rank 0 writes the index."""
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tools.extract_features", "--checkpoint", str(ckpts["fine"]),
           str(demo / "videos" / "test"), "--output_dir", str(out), "--shard_size", "2", "--num_workers", "0",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "shards (rank 1)" in proc.stderr  # the second process did take its shards
    feats, index = ef.load_features(str(out))
    videos = sorted(str(p) for p in (demo / "videos" / "test").glob("*.mp4"))
    assert list(index["path"]) == videos and feats.shape == (len(videos), 64)
    assert extract_single(demo, ckpts, tmp_path, videos).shape == feats.shape
    np.testing.assert_allclose(feats, extract_single(demo, ckpts, tmp_path, videos), atol=1e-5)


def extract_single(demo, ckpts, tmp_path, videos):
    out = tmp_path / "single"
    if not (out / "index.csv").exists():
        assert ef.main(["--checkpoint", str(ckpts["fine"]), str(demo / "videos" / "test"), "--output_dir", str(out),
                        "--shard_size", "2", "--num_workers", "0", "--device", "cpu"]) == 0
    return ef.load_features(str(out))[0]

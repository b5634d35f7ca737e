"""tools/predict.py on demo videos and frame folders with a checkpoint fine-tuned in the test, and on
Megamind.avi (face cropping, sliding windows over a long video, DFEW class names from the registry)."""
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch

import models  # noqa: F401
from datasets import read_annotations, read_clips
from datasets.demo import CLASSES, generate, write_mp4
from datasets.sampling import train_indices
from engine.checkpoint import save_checkpoint, training_state
from test_datasets_readers import corrupt_tail
from tools import predict
from datasets.inference import ClipSpec
from datasets.transforms import normalize

ARCH = dict(img_size=64, all_frames=8, stage_depths=(1, 1, 1), embed_dim=64, num_heads=2)
ARGS = {"model": "svfap_tiny_patch16_160", "input_size": 64, "num_frames": 8, "sampling_rate": 2,
        "stage_depths": [1, 1, 1], "embed_dim": 64, "num_heads": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate(str(out), train_per_class=2, eval_per_class=1, frames=24)
    return out


@pytest.fixture(scope="module")
def checkpoint(demo, tmp_path_factory):
    """The tiny model fine-tuned for 30 steps on the demo's training clips (a few seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        samples = read_annotations(str(demo / "train.csv"))
        model = timm.create_model("svfap_tiny_patch16_160", num_classes=6, **ARCH)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        decoded = [read_clips(s.path, lambda n: [np.arange(n)])[0] for s in samples]
        for _ in range(30):
            pick = rng.integers(0, len(samples), 6)
            x = torch.stack([ClipSpec(64)(decoded[i][train_indices(len(decoded[i]), 8, 2)]) for i in pick])
            y = torch.tensor([samples[i].label for i in pick])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-best.pth"
    save_checkpoint(str(path), training_state(model.eval(), epoch=0,
                    args={**ARGS, "data_set": "custom", "nb_classes": 6, "task": "classification"}))
    return path


def covers(windows, n, num_frames, rate):
    """Every frame of the video lies inside some window; each window is a proper clip."""
    seen = np.zeros(n, bool)
    for w in windows:
        frames = np.asarray(w["frames"])
        assert len(frames) == num_frames and w["start_frame"] == frames[0] and w["end_frame"] == frames[-1]
        assert np.all(np.diff(frames) == rate) or n < (num_frames - 1) * rate + 1
        seen[w["start_frame"]:w["end_frame"] + 1] = True
    return seen.all()


def check_probs(entry, names, k):
    probs = entry["probs"]
    assert list(probs) == names
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert len(entry["top"]) == k
    assert [c for c, _ in entry["top"]] == sorted(names, key=lambda c: -probs[c])[:k]
    assert [p for _, p in entry["top"]] == sorted((p for _, p in entry["top"]), reverse=True)


def test_demo_video_and_frame_folder(demo, checkpoint, tmp_path, capsys):
    tests = read_annotations(str(demo / "test.csv"))
    video = next(s.path for s in tests if s.path.endswith(".mp4"))
    folder = next(s.path for s in tests if not s.path.endswith(".mp4"))
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    rc = predict.main(["--checkpoint", str(checkpoint), video, folder, "--class_names", str(demo / "classes.txt"),
                       "--topk", "2", "--device", "cpu", "--out_json", str(out_json), "--out_csv", str(out_csv)])
    assert rc == 0
    result = json.loads(out_json.read_text())
    names = CLASSES[:6]
    assert result["names"] == names and result["task"] == "classification" and result["sampling_rate"] == 2
    assert [v["video"] for v in result["videos"]] == [video, folder]
    for v in result["videos"]:
        assert v["num_frames"] == 24
        check_probs(v, names, 2)
        # 24 frames, clips of 8 frames 2 apart (span 15): starts 0 and 9, the last ending on frame 23.
        assert [w["start_frame"] for w in v["windows"]] == [0, 9]
        assert covers(v["windows"], 24, 8, 2)
        for w in v["windows"]:
            check_probs(w, names, 2)
        mean = np.mean([[w["probs"][c] for c in names] for w in v["windows"]], axis=0)
        np.testing.assert_allclose([v["probs"][c] for c in names], mean, rtol=1e-9)
    assert result["videos"][0]["fps"] == pytest.approx(25.0) and result["videos"][1]["fps"] is None

    table = pd.read_csv(out_csv)
    assert list(table["window"]) == ["0", "1", "video"] * 2
    assert {f"prob_{c}" for c in names} <= set(table.columns)
    np.testing.assert_allclose(table[[f"prob_{c}" for c in names]].sum(axis=1), 1.0, atol=1e-6)
    screen = capsys.readouterr().out
    assert result["videos"][0]["top"][0][0] in screen and "top classes" in screen


def test_prediction_is_the_models_output_on_the_test_view(demo, checkpoint):
    """The probabilities are softmax(model(clip)) of the clip the test split would build."""
    p = predict.Predictor(str(checkpoint), class_names=str(demo / "classes.txt"))
    sample = read_annotations(str(demo / "test.csv"))[0]
    result = p.predict(sample.path, windows="centre")
    (frames,) = read_clips(sample.path, lambda n: [np.asarray(result["windows"][0]["frames"])])
    from datasets import VideoClsDataset
    ds = VideoClsDataset(str(demo / "test.csv"), mode="test", num_frames=8, sampling_rate=2, input_size=64,
                         test_num_segment=1, test_num_crop=1)
    clip = normalize(ds[0][0])  # the test item of one view, normalised as the engine does on the device
    torch.testing.assert_close(clip, ClipSpec(64)(frames), rtol=0, atol=0)
    with torch.no_grad():
        expected = p.model(clip[None]).softmax(-1)[0].numpy()
    np.testing.assert_allclose([result["probs"][c] for c in p.names], expected, atol=1e-6)


def test_chunked_decoding_of_a_long_video_gives_the_same_scores(demo, checkpoint):
    p = predict.Predictor(str(checkpoint))
    path = read_annotations(str(demo / "test.csv"))[0].path
    whole = p.predict(path, window_stride=3)
    chunked = p.predict(path, window_stride=3, max_frames=10)
    assert len(whole["windows"]) == 4 and covers(whole["windows"], 24, 8, 2)
    np.testing.assert_allclose([whole["probs"][c] for c in p.names], [chunked["probs"][c] for c in p.names],
                               atol=1e-6)


def test_folder_of_videos(demo, checkpoint, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert predict.main(["--checkpoint", str(checkpoint), str(demo / "videos"), "--windows", "uniform",
                         "--num_segments", "3", "--out_json", str(out)]) == 0
    videos = json.loads(out.read_text())["videos"]
    expected = sorted(str(p) for p in (demo / "videos").rglob("*.mp4"))
    assert sorted(v["video"] for v in videos) == expected and len(expected) == 19  # 3 in 4 demo clips are mp4
    # the test split's windows on the stride grid: 12 grid frames, starts 0, 2, 4 grid steps
    assert all(len(v["windows"]) == 3 and v["windows"][-1]["end_frame"] == 22 for v in videos)
    assert [c for c in videos[0]["probs"]] == [str(i) for i in range(6)]  # custom data set, no --class_names


def test_megamind_with_face_crop_and_registry_names(opencv_data, tmp_path, capsys):
    """A DFEW-configured checkpoint: class names from the registry; sliding windows cover all 270 frames."""
    model = timm.create_model("svfap_tiny_patch16_160", num_classes=7, **ARCH)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # distinct probabilities, so the ranking is tested
    ckpt = tmp_path / "dfew.pth"
    save_checkpoint(str(ckpt), training_state(model, args={**ARGS, "sampling_rate": 4, "data_set": "DFEW", "nb_classes": 7}))
    out = tmp_path / "mm.json"
    rc = predict.main(["--checkpoint", str(ckpt), str(opencv_data / "Megamind.avi"), "--crop", "--show_windows",
                       "--topk", "7", "--out_json", str(out), "--out_csv", str(tmp_path / "mm.csv")])
    assert rc == 0
    v = json.loads(out.read_text())["videos"][0]
    names = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    check_probs(v, names, 7)
    assert v["num_frames"] == 270 and v["fps"] == pytest.approx(23.976, abs=0.01)
    # Span (8 - 1) * 4 + 1 = 29 frames: 9 touching windows from 0, then one ending on frame 269.
    assert [w["start_frame"] for w in v["windows"]] == list(range(0, 233, 29)) + [241]
    assert covers(v["windows"], 270, 8, 4)
    assert v["windows"][-1]["end_s"] == pytest.approx(270 / 23.976, abs=0.01)
    assert v["face_crop"]["detections"] > 0.5 * v["face_crop"]["frames"]
    screen = capsys.readouterr().out
    assert "[241-269]" in screen and v["top"][0][0] in screen


def test_regression_outputs_with_target_names(demo, tmp_path, capsys):
    model = timm.create_model("svfap_tiny_patch16_160", num_classes=3, **ARCH)
    ckpt = tmp_path / "werewolf.pth"
    save_checkpoint(str(ckpt), training_state(model, args={**ARGS, "data_set": "WEREWOLF-XL", "nb_classes": 3}))
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    video = read_annotations(str(demo / "test.csv"))[0].path
    assert predict.main(["--checkpoint", str(ckpt), video, "--out_json", str(out_json), "--out_csv", str(out_csv)]) == 0
    result = json.loads(out_json.read_text())
    v = result["videos"][0]
    assert result["task"] == "regression" and list(v["outputs"]) == ["arousal", "valence", "dominance"]
    np.testing.assert_allclose(list(v["outputs"].values()),
                               np.mean([list(w["outputs"].values()) for w in v["windows"]], axis=0), rtol=1e-9)
    assert {"arousal", "valence", "dominance"} <= set(pd.read_csv(out_csv).columns)
    assert "valence" in capsys.readouterr().out


def test_clear_errors(demo, checkpoint, tmp_path, capsys):
    video = read_annotations(str(demo / "test.csv"))[0].path
    assert predict.main(["--checkpoint", str(checkpoint), str(tmp_path / "missing.mp4")]) == 2
    assert "no such video" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(tmp_path / "missing.pth"), video]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), video, "--class_names", "a,b,c"]) == 2
    assert "3 class/target names" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), video, "--nb_classes", "7"]) == 2
    assert "7" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), video, "--embed_dim", "96"]) == 2
    assert "--embed_dim 96 (the checkpoint records 64)" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), video, "--embed_dim", "96", "--force_config"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    pre = timm.create_model("pretrain_svfap_tiny_patch16_160", img_size=64, num_frames=8, stage_depths=(1, 1, 1))
    save_checkpoint(str(tmp_path / "pre.pth"), training_state(pre, args={"model": "pretrain_svfap_tiny_patch16_160"}))
    assert predict.main(["--checkpoint", str(tmp_path / "pre.pth"), video]) == 2
    assert "pre-training checkpoint" in capsys.readouterr().err
    # An unreadable video among good ones is reported in the table and the exit status, not fatal.
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    noisy = tmp_path / "noisy.mp4"  # opens, then fails to decode
    write_mp4(str(tmp_path / "good.mp4"), np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), np.uint8))
    corrupt_tail(str(tmp_path / "good.mp4"), str(noisy))
    for backend in ("pyav", "decord"):
        assert predict.main(["--checkpoint", str(checkpoint), video, str(bad), str(noisy), "--backend", backend]) == 1
        captured = capsys.readouterr()
        assert captured.out.count("ERROR") == 2 and "2 of 3 videos failed" in captured.err
        assert "decoding failed" in captured.out

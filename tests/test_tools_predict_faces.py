"""tools/predict.py --faces all: every face of a video tracked and predicted on its own, with a time
series, a timeline plot per face and a contact sheet. The video puts two real faces (crops of
Megamind.avi) side by side: the left one talks through all 60 frames, the right one reacts in
the second half only."""
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

import models  # noqa: F401
from datasets.inference import ClipSpec
from datasets.video_io import iter_frames, write_mp4
from engine.checkpoint import save_checkpoint, training_state
from preprocess import face_crop
from preprocess.faces import TrackConfig, track_cropper, track_faces
from test_tools_predict import ARCH, ARGS
from tools import predict

DFEW = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


@pytest.fixture(scope="module")
def two_faces(opencv_data, tmp_path_factory):
    frames = list(face_crop.read_frames(opencv_data / "Megamind.avi", max_frames=130))
    cfg = face_crop.CropConfig(size=180, min_face=0.25)
    left, _, _ = face_crop.crop_faces(frames[10:70], cfg)    # she talks (first shot)
    right, _, _ = face_crop.crop_faces(frames[100:130], cfg)  # he reacts (second shot)
    canvas = np.full((60, 220, 440, 3), 16, np.uint8)
    canvas[:, 20:200, 20:200] = left
    canvas[30:, 20:200, 240:420] = right
    path = tmp_path_factory.mktemp("two") / "two_faces.mp4"
    write_mp4(str(path), canvas, 25)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny DFEW-configured model; a wide head so that different crops get different classes."""
    torch.manual_seed(0)
    model = timm.create_model("svfap_tiny_patch16_160", num_classes=7, **ARCH)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "dfew.pth"
    save_checkpoint(str(path), training_state(model, args={**ARGS, "data_set": "DFEW", "nb_classes": 7}))
    return path


@pytest.fixture(scope="module")
def run_all(two_faces, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("faces")
    rc = predict.main(["--checkpoint", str(checkpoint), str(two_faces), "--faces", "all", "--out_dir", str(out / "tl"),
                       "--min_face", "0.3", "--topk", "2", "--show_windows", "--out_json", str(out / "p.json"),
                       "--out_csv", str(out / "p.csv")])
    assert rc == 0
    return out, json.loads((out / "p.json").read_text())["videos"][0]


def test_two_faces_give_two_tracks_with_their_time_ranges(run_all):
    _, v = run_all
    faces = v["faces"]
    assert [(f["face"], f["start_frame"], f["end_frame"]) for f in faces] == [(1, 0, 59), (2, 30, 59)]
    assert faces[0]["box"][0] < 220 < faces[1]["box"][0]  # left, then right
    assert faces[1]["start_s"] == pytest.approx(1.2) and faces[1]["end_s"] == pytest.approx(2.4)
    assert v["num_frames"] == 60 and "windows" not in v
    # Clips of 8 frames 2 apart (span 15) over each face's own frames.
    assert [w["start_frame"] for w in faces[0]["windows"]] == [0, 15, 30, 45]
    assert [w["start_frame"] for w in faces[1]["windows"]] == [30, 45]
    for f in faces:
        assert all(f["start_frame"] <= w["start_frame"] and w["end_frame"] <= f["end_frame"] for w in f["windows"])
        assert sum(f["probs"].values()) == pytest.approx(1.0)
        np.testing.assert_allclose([f["probs"][c] for c in DFEW],
                                   np.mean([[w["probs"][c] for c in DFEW] for w in f["windows"]], axis=0), rtol=1e-9)
    # Different faces, different crops: the two timelines differ where both are on screen.
    both = [[w["probs"][c] for c in DFEW] for w in (faces[0]["windows"][2], faces[1]["windows"][0])]
    assert np.abs(np.subtract(*both)).max() > 1e-3


def test_per_face_files(run_all):
    out, v = run_all
    folder = out / "tl" / "two_faces"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["faces.png"] + [f"face_{k}.{e}" for k in (1, 2) for e in ("csv", "json", "png")])
    for face in v["faces"]:
        k = face["face"]
        table = pd.read_csv(folder / f"face_{k}.csv")
        assert list(table["start_frame"]) == [w["start_frame"] for w in face["windows"]]
        centres = [(w["start_frame"] + w["end_frame"] + 1) / 2 / 25 for w in face["windows"]]
        np.testing.assert_allclose(table["time_s"], centres, atol=1e-3)
        np.testing.assert_allclose(table[[f"prob_{c}" for c in DFEW]].to_numpy(),
                                   [[w["probs"][c] for c in DFEW] for w in face["windows"]], atol=1e-9)
        saved = json.loads((folder / f"face_{k}.json").read_text())
        assert saved["names"] == DFEW and saved["start_frame"] == face["start_frame"]
        assert saved["windows"] == face["windows"] and saved["fps"] == pytest.approx(25)
        with Image.open(folder / f"face_{k}.png") as im:
            assert im.size == (1000, 320)
            # The crop is drawn on the left, the curves in the middle: neither is blank.
            px = np.asarray(im.convert("L"), float)
            assert px[:, :160].std() > 20 and px[:, 200:800].std() > 10
    with Image.open(folder / "faces.png") as sheet:
        assert sheet.size[0] >= 2 * 200


def test_table_and_csv_name_the_faces(run_all, capsys):
    out, v = run_all
    table = pd.read_csv(out / "p.csv")
    assert list(table["face"]) == [1] * 5 + [2] * 3
    assert list(table["window"]) == ["0", "1", "2", "3", "face", "0", "1", "face"]


def test_probabilities_are_the_models_output_on_each_faces_crops(two_faces, checkpoint):
    p = predict.Predictor(str(checkpoint))
    result, thumbs = p.predict_faces(str(two_faces), TrackConfig(min_face=0.3), crop_size=160)
    assert [t.shape for t in thumbs] == [(128, 128, 3)] * 2
    frames = list(iter_frames(str(two_faces)))
    tracks, _ = track_faces(frames, TrackConfig(min_face=0.3))
    face, track = result["faces"][1], tracks[1]
    w = np.asarray(face["windows"][1]["frames"])
    crops, _ = track_cropper(track, 160)([frames[i] for i in w], w)
    with torch.no_grad():
        expected = p.model(ClipSpec(64)(crops)[None]).softmax(-1)[0].numpy()
    np.testing.assert_allclose([face["windows"][1]["probs"][c] for c in DFEW], expected, atol=1e-5)


def test_one_face_mode_is_unchanged(two_faces, checkpoint, tmp_path):
    out = tmp_path / "p.json"
    assert predict.main(["--checkpoint", str(checkpoint), str(two_faces), "--out_json", str(out)]) == 0
    v = json.loads(out.read_text())["videos"][0]
    assert "faces" not in v and [w["start_frame"] for w in v["windows"]] == [0, 15, 30, 45]


def test_face_option_errors(two_faces, checkpoint, tmp_path, capsys):
    base = ["--checkpoint", str(checkpoint), str(two_faces), "--faces", "all"]
    assert predict.main(base) == 2
    assert "give --out_dir" in capsys.readouterr().err
    assert predict.main(base + ["--out_dir", str(tmp_path), "--min_face", "0"]) == 2
    assert "--min_face" in capsys.readouterr().err
    blank = tmp_path / "blank.mp4"
    write_mp4(str(blank), np.full((20, 64, 64, 3), 90, np.uint8), 25)
    assert predict.main(["--checkpoint", str(checkpoint), str(blank), "--faces", "all", "--out_dir", str(tmp_path)]) == 1
    assert "no face found in 20 frames" in capsys.readouterr().out

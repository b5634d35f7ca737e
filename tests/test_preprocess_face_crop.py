"""Face cropping on a real video (Debian opencv-doc's Megamind.avi, every 3rd frame)."""
import json
import time

import cv2
import numpy as np
import pytest

from preprocess import face_crop
from preprocess.faces import FaceDetector, smooth_track

CFG = face_crop.CropConfig(frame_step=3)  # 90 of the 270 frames keeps the test short


@pytest.fixture(scope="module")
def cropped(tmp_path_factory, opencv_data):
    out = tmp_path_factory.mktemp("crop")
    src = opencv_data / "Megamind.avi"
    res = face_crop.crop_videos([(str(src), str(out / "megamind"))], CFG, workers=1,
                                report=out / "report.json")[0]
    return src, out, res


def has_face(img, detector=FaceDetector(min_face=0.3)):
    """A face fills a crop: the box side is 1 / (1 + 2 * margin) of the crop's."""
    return len(detector(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))) > 0


def test_crops_contain_faces(cropped):
    _, out, res = cropped
    assert res["status"] == "ok" and res["frames"] == 90
    files = sorted((out / "megamind").glob("*.jpg"))
    assert [f.name for f in files[:2]] == ["00001.jpg", "00002.jpg"] and len(files) == 90
    crops = [cv2.imread(str(f)) for f in files]
    assert all(c.shape == (224, 224, 3) for c in crops)
    # The clip fades through black (first frame, one shot change): those frames hold no face at all.
    visible = [c for c in crops if c.mean() > 20]
    assert len(visible) >= 85
    rate = np.mean([has_face(c) for c in visible])
    print(f"detector hit rate on crops: {rate:.3f}")
    assert rate > 0.9


def test_track_is_stable(opencv_data):
    frames = list(face_crop.read_frames(opencv_data / "Megamind.avi", CFG.frame_step))
    raw, n = face_crop.detect_boxes(frames, CFG)
    boxes = smooth_track(raw, CFG.smooth, CFG.jump)
    assert boxes.shape == (n, 3) and not np.isnan(boxes).any()
    step = np.hypot(*np.diff(boxes[:, :2], axis=0).T) / boxes[1:, 2]
    # Big moves happen only at the few shot cuts; elsewhere the box glides.
    assert (step > 0.25).sum() <= 4
    assert np.median(step) < 0.03
    # ... and is steadier than the raw detections it comes from.
    det = np.nonzero(~np.isnan(raw[:, 0]))[0]
    raw_step = np.hypot(*np.diff(raw[det, :2], axis=0).T) / raw[det[1:], 2]
    smooth_step = np.hypot(*(boxes[det[1:], :2] - boxes[det[:-1], :2]).T) / boxes[det[1:], 2]
    assert np.median(smooth_step) < np.median(raw_step)


def test_rerun_skips_finished_work(cropped):
    src, out, _ = cropped
    before = {f: f.stat().st_mtime_ns for f in (out / "megamind").iterdir()}
    t = time.time()
    res = face_crop.crop_videos([(str(src), str(out / "megamind"))], CFG, workers=1)[0]
    assert res["status"] == "done" and time.time() - t < 1.0
    assert {f: f.stat().st_mtime_ns for f in (out / "megamind").iterdir()} == before


def test_no_face_and_unreadable_are_reported(tmp_path, capsys):
    blank = tmp_path / "in" / "blank.mp4"
    blank.parent.mkdir()
    w = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 96))
    for i in range(6):
        w.write(np.full((96, 96, 3), 40 * i, np.uint8))
    w.release()
    (tmp_path / "in" / "broken.avi").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert face_crop.main([str(tmp_path / "in"), "--out", str(out), "--workers", "2", "--format", "mp4"]) == 1
    report = json.loads((out / "face_crop_report.json").read_text())
    assert report["no_face"] == [str(blank)]
    assert [e["video"] for e in report["errors"]] == [str(tmp_path / "in" / "broken.avi")]
    assert (out / "blank.noface").exists() and not (out / "blank.mp4").exists()
    printed = capsys.readouterr().out
    assert "no face: " in printed and "1 without a face, 1 unreadable" in printed
    # A rerun still reports it rather than dropping it silently.
    face_crop.main([str(blank), "--out", str(out), "--format", "mp4"])
    assert "1 without a face" in capsys.readouterr().out


def test_mp4_output(tmp_path, opencv_data):
    cfg = face_crop.CropConfig(fmt="mp4", size=112, max_frames=30, frame_step=2)
    res = face_crop.crop_video(opencv_data / "Megamind.avi", tmp_path / "mm", cfg)
    assert res["status"] == "ok"
    cap = cv2.VideoCapture(str(tmp_path / "mm.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 112

"""A raw-video dataset script with --crop: split files name exactly the crops the step wrote,
and a video without a face is left out and reported, not dropped silently."""
import json

import cv2
import numpy as np

from preprocess import enterface


def write_avi(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, (w, h))
    for f in frames:
        out.write(f)
    out.release()


def test_enterface_crop_and_split(tmp_path, opencv_data, capsys):
    cap = cv2.VideoCapture(str(opencv_data / "Megamind.avi"))
    frames = [cap.read()[1] for _ in range(110)][90:106:2]  # 8 frames of a visible face
    root = tmp_path / "eNTERFACE05"
    faces = {1: "subject 1/anger/sentence 1/s1_an_1.avi", 11: "Subject 11/fear/sentence 2/s12_fe_2.avi",
             20: "subject 20/happiness/sentence 3/s20_ha_3.avi", 29: "subject 29/sadness/sentence 4/s29_sa_4.avi",
             38: "subject 38/surprise/sentence 5/s38_su_5.avi"}
    for rel in faces.values():
        write_avi(root / rel, frames)
    write_avi(root / "subject 2/disgust/sentence 1/s2_di_1.avi", [np.full((120, 160, 3), 90, np.uint8)] * 6)
    enterface.main(["--root", str(root), "--out", str(tmp_path / "out"), "--crop", "--workers", "2",
                    "--size", "64"])
    lines = set()
    for k in range(1, 6):
        lines |= set((tmp_path / "out" / f"split{k:02d}" / "test.csv").read_text().splitlines())
    assert lines == {"face_aligned/subject_1/anger/sentence_1/s1_an_1 0",
                     "face_aligned/subject_11/fear/sentence_2/s12_fe_2 2",
                     "face_aligned/subject_20/happiness/sentence_3/s20_ha_3 3",
                     "face_aligned/subject_29/sadness/sentence_4/s29_sa_4 4",
                     "face_aligned/subject_38/surprise/sentence_5/s38_su_5 5"}
    for line in lines:
        crops = sorted((root / line.split()[0]).glob("*.jpg"))
        assert len(crops) == 8 and cv2.imread(str(crops[0])).shape == (64, 64, 3)
    report = json.loads((root / "face_aligned" / "face_crop_report.json").read_text())
    assert report["no_face"] == [str(root / "subject 2/disgust/sentence 1/s2_di_1.avi")]
    assert "1 video(s) left out of the splits" in capsys.readouterr().out

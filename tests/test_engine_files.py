"""Reports that cannot lie: every report is written whole or not at all (a real full disk, a small
tmpfs in a private mount namespace, under each writer), metrics.json says what it comes from, and
pooling refuses a pred.csv that is not the one its metrics.json was written with."""
import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import PY, REPO
from engine import pool_folds
from engine.reports import metrics_from_frame, write_reports


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory, opencv_data):
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.fail("cannot create a private mount namespace here (unshare --user --mount refused)")
    root = tmp_path_factory.mktemp("tmpfs")
    helper = REPO / "tests" / "full_disk_writes.py"
    cmd = f"mount -t tmpfs -o size=2m tmpfs {root} && exec {PY} {helper} {root} {opencv_data / 'Megamind.avi'}"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case,file", [
    ("reports_whole_or_not_at_all", "reports/pred.csv"),
    ("metrics_json_after_pred_csv", "metrics/metrics.json"),
    ("plot", "plot/confusion_matrix.png"),
    ("log_txt", "log/log.txt"),
    ("features", "features/features.npy"),
    ("args_json", "args/args.json"),
    ("feature_shard", "shards/shards/shard_00000.npy"),
])
def test_a_full_disk_during_a_report_write_is_one_error_and_leaves_nothing_cut(full_disk, case, file):
    result = full_disk[case]
    assert result["error"] is not None and len(result["error"].splitlines()) == 1, result
    assert result["error"].startswith("cannot write ") and file in result["error"], result
    assert "no space left on device" in result["error"] and "MB free in" in result["error"]
    assert not [p for p in result["left"] if ".tmp" in p], result["left"]
    assert result["intact"], result  # what was there before is as it was (or whole)


def test_a_full_disk_under_face_cropping_is_a_write_error_not_an_unreadable_video(full_disk):
    result = full_disk["face_crops"]
    assert result["statuses"] == ["write_error"], result
    assert result["error"] and "could not be written" in result["error"] and "no split file" in result["error"]
    assert "No space left on device" in result["error"] and "unreadable" not in result["error"]
    assert not [p for p in result["left"] if p.startswith("faces/clip")], result["left"]  # no partial crop


def test_a_full_disk_under_tensorboard_warns_once_and_training_goes_on(full_disk):
    result = full_disk["tensorboard"]
    warnings = [line for line in result["stdout"].splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "TensorBoard logging stops here" in warnings[0], result["stdout"]


def test_a_full_disk_ends_an_entry_point_with_one_error_line(full_disk):
    result = full_disk["one_error_line"]
    assert result["status"] == 1
    lines = result["error"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "pooled/pred.csv" in lines[0]
    assert result["left"] == []


def frame(rows):
    return pd.DataFrame({"id": [f"v/{i}.mp4" for i in range(rows)], "target": [i % 3 for i in range(rows)],
                         "prediction": [0] * rows, "score_a": [0.5] * rows, "score_b": [0.3] * rows,
                         "score_c": [0.2] * rows})


def test_metrics_json_records_its_provenance_and_its_pred_csv(tmp_path):
    f = frame(7)
    write_reports(str(tmp_path), f, metrics_from_frame(f, "classification", ["a", "b", "c"]), "cls",
                  ["a", "b", "c"], provenance={"checkpoint": "/x/checkpoint-best.pth", "epoch": 3})
    provenance = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert provenance["checkpoint"] == "/x/checkpoint-best.pth" and provenance["epoch"] == 3
    assert provenance["pred_csv"]["rows"] == 7 and len(provenance["pred_csv"]["sha256"]) == 64
    assert len(provenance["code"]["commit"]) == 40 and provenance["code"]["dirty"] in (True, False)
    assert provenance["time"][:2] == "20"


def test_pooling_refuses_a_pred_csv_cut_or_changed_after_its_metrics_json(tmp_path, capsys):
    for fold in ("split01", "split02"):
        f = frame(6).assign(id=[f"{fold}/{i}.mp4" for i in range(6)])
        write_reports(str(tmp_path / fold), f, metrics_from_frame(f, "classification", ["a", "b", "c"]), "cls",
                      ["a", "b", "c"])
    args = ["--pred_dirs", str(tmp_path / "split01"), str(tmp_path / "split02")]
    assert pool_folds.main(args) == 0
    pred = tmp_path / "split02" / "pred.csv"
    whole = pred.read_bytes()
    pred.write_bytes(whole[: len(whole) - 9])  # cut mid-row, as a full disk leaves it
    capsys.readouterr()
    assert pool_folds.main(args) == 2
    assert "ends in the middle of a row" in capsys.readouterr().err
    pred.write_bytes(whole[: whole.rindex(b"\n", 0, len(whole) - 1) + 1])  # one whole row fewer
    assert pool_folds.main(args) == 2
    err = capsys.readouterr().err
    assert "is not the pred.csv its metrics.json was written with (5 rows" in err and "6 rows" in err

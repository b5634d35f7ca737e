"""VoxCeleb2, First Impressions, AVCAffe and Werewolf-XL scripts on small fixture layouts."""
import pickle

import numpy as np
import pytest

from datasets import video_io
from engine.cli import run_entry
from preprocess import avcaffe, first_impressions, voxceleb2, werewolf_xl


def rows(path):
    return [l.split() for l in path.read_text().splitlines()]


def write_mp4(path, n=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    video_io.write_mp4(str(path), [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(n)])


def test_voxceleb2_scan_and_check(tmp_path, capsys):
    root = tmp_path / "vox"
    write_mp4(root / "dev/mp4/id00012/abcDEF/00001.mp4")
    write_mp4(root / "dev/mp4/id00012/abcDEF/00002.mp4")
    (root / "dev/mp4/id00012/abcDEF/00003.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "dev/mp4/id00099/xyz").mkdir(parents=True)
    (root / "dev/mp4/id00099/xyz/00001.mp4").touch()
    (root / "dev/mp4/id00099/xyz/notes.txt").touch()
    voxceleb2.main(["--root", str(root), "--out", str(tmp_path / "all")])
    got = rows(tmp_path / "all" / "train.csv")
    assert len(got) == 4 and {r[1] for r in got} == {"0"}
    assert "4 clips, 2 videos, 2 speakers" in capsys.readouterr().out
    voxceleb2.main(["--root", str(root), "--out", str(tmp_path / "ok"), "--check", "--workers", "2"])
    assert sorted(r[0] for r in rows(tmp_path / "ok" / "train.csv")) == [
        "dev/mp4/id00012/abcDEF/00001.mp4", "dev/mp4/id00012/abcDEF/00002.mp4"]
    bad = (tmp_path / "ok" / "undecodable.txt").read_text()
    assert "00003.mp4" in bad and "id00099/xyz/00001.mp4" in bad
    assert run_entry(voxceleb2.main, ["--root", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def keyframes(path):
    import av
    with av.open(str(path)) as c:
        return [i for i, pk in enumerate(p for p in c.demux(c.streams.video[0]) if p.size) if pk.is_keyframe]


def test_voxceleb2_recrop_writes_the_face_box_and_the_loader_reads_either_form(tmp_path, capsys):
    """--recrop: 160x160 face crops with short keyframe intervals, resumable, bad clips left out;
    the pre-training loader (face_crop=True) gives the same clips from either form."""
    import random

    import torch

    from datasets import PretrainDataset
    from datasets.demo import render
    root, rc, out = tmp_path / "vox", tmp_path / "recropped", tmp_path / "lists"
    clips = {}
    for k, name in enumerate(["id00012/abcDEF/00001.mp4", "id00012/abcDEF/00002.mp4"]):
        clips[name] = render(k, 24, 224, np.random.default_rng(k))
        (root / "dev/mp4" / name).parent.mkdir(parents=True, exist_ok=True)
        video_io.write_mp4(str(root / "dev/mp4" / name), clips[name], gop=24)
    (root / "dev/mp4/id00012/abcDEF/00003.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    args = ["--root", str(root), "--out", str(out), "--recrop", str(rc), "--gop", "8", "--workers", "2"]
    voxceleb2.main(args)
    assert "pre-train with --data_path" in capsys.readouterr().out
    assert [r[0] for r in rows(out / "train.csv")] == [f"dev/mp4/{n}" for n in clips]
    assert "00003.mp4" in (out / "undecodable.txt").read_text()
    for name, frames in clips.items():
        path = rc / "dev/mp4" / name
        (crops,) = video_io.read_clips(str(path), lambda n: [list(range(n))])
        (whole,) = video_io.read_clips(str(root / "dev/mp4" / name), lambda n: [list(range(n))])
        assert crops.shape == (24, 160, 160, 3) and keyframes(path) == [0, 8, 16]
        assert np.abs(crops.astype(int) - whole[:, :160, 32:192]).mean() < 2  # one more H.264 generation

    done = rc / "dev/mp4/id00012/abcDEF/00001.mp4"
    stamp = done.stat().st_mtime_ns
    (rc / "dev/mp4/id00012/abcDEF/00002.mp4").unlink()
    (rc / "dev/mp4/id00012/abcDEF/00002.partial.mp4").write_bytes(b"cut short")  # an interrupted run
    voxceleb2.main(args)
    assert done.stat().st_mtime_ns == stamp  # finished clips are kept
    assert keyframes(rc / "dev/mp4/id00012/abcDEF/00002.mp4") == [0, 8, 16]
    assert not list(rc.rglob("*.partial.mp4"))

    loaded = []
    for data_root in (root, rc):
        ds = PretrainDataset(str(out / "train.csv"), data_root=str(data_root), face_crop=True, input_size=64,
                             num_frames=8, sampling_rate=2)
        random.seed(0), np.random.seed(0)
        loaded.append(torch.stack([ds[i][0] for i in range(len(ds)) for _ in range(3)]).float())
    assert (loaded[0] - loaded[1]).abs().mean() < 2  # the same crops: the face box is not taken twice


def vox_copies(root, count, size=64, frames=24):
    """A VoxCeleb2 layout of `count` copies of one generated clip."""
    import shutil

    from datasets.demo import render
    first = root / "dev/mp4/id00001/vid/00000.mp4"
    first.parent.mkdir(parents=True)
    video_io.write_mp4(str(first), render(0, frames, size, np.random.default_rng(0)), gop=frames)
    for k in range(1, count):
        shutil.copy(first, first.with_name(f"{k:05d}.mp4"))
    return root


def test_recrop_writes_160_px_crops_from_frames_of_any_size(tmp_path):
    """The loader knows a recropped clip by its 160x160 frames: the face box of a 64-px source is
    resized to that, so pre-training with --face_crop True does not crop it a second time."""
    root = vox_copies(tmp_path / "vox", 1)
    dst = tmp_path / "rc.mp4"
    assert voxceleb2.recrop_clip(str(root / "dev/mp4/id00001/vid/00000.mp4"), str(dst), gop=8) is None
    (crops,) = video_io.read_clips(str(dst), lambda n: [list(range(n))])
    assert crops.shape == (24, 160, 160, 3)


def test_recrop_stops_on_a_full_disk_and_keeps_the_lists(tmp_path, capsys):
    """A clip that cannot be written (here its partial file leads to /dev/full: "No space left on
    device") stops the run with one error line and status 1; it is not taken for an unreadable
    source, and the existing train.csv is left as it was."""
    root, rc, out = vox_copies(tmp_path / "vox", 3), tmp_path / "rc", tmp_path / "lists"
    out.mkdir()
    (out / "train.csv").write_text("the previous list\n")
    partial = rc / "dev/mp4/id00001/vid/00001.partial.mp4"
    partial.parent.mkdir(parents=True)
    partial.symlink_to("/dev/full")
    status = run_entry(voxceleb2.main, ["--root", str(root), "--out", str(out), "--recrop", str(rc),
                                         "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "error: cannot write" in err and "No space left on device" in err
    assert "rerun the same command" in err
    assert (out / "train.csv").read_text() == "the previous list\n" and not (out / "undecodable.txt").exists()
    assert not partial.is_symlink()  # the partial file is removed
    (rc / "dev/mp4/id00001/vid").mkdir(exist_ok=True)
    assert run_entry(voxceleb2.main, ["--root", str(root), "--out", str(out), "--recrop", str(rc)]) == 0
    assert len(rows(out / "train.csv")) == 3 and len(list(rc.rglob("*.mp4"))) == 3  # the rerun finishes


def test_recrop_rejects_a_file_as_its_folder_and_zero_workers(tmp_path, capsys):
    root, out = vox_copies(tmp_path / "vox", 1), tmp_path / "lists"
    (tmp_path / "afile").write_text("")
    assert run_entry(voxceleb2.main, ["--root", str(root), "--out", str(out), "--recrop",
                                       str(tmp_path / "afile"), "--workers", "1"]) == 1
    assert "error: cannot write" in capsys.readouterr().err and not (out / "train.csv").exists()
    assert run_entry(voxceleb2.main, ["--root", str(root), "--out", str(out), "--recrop", str(tmp_path / "rc"),
                                       "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_recrop_stopped_by_sigterm_stops_its_workers_and_resumes(tmp_path):
    """SIGTERM mid-run: exit 130 with one line, no worker left, nothing listed; the rerun finishes.
    One source clip is a named pipe no one writes to: the worker that opens it waits, so the run is
    mid-run when the signal comes however fast or busy the machine is (and that worker must be
    stopped by the main process)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    count = 20
    root, rc, out = vox_copies(tmp_path / "vox", count), tmp_path / "rc", tmp_path / "lists"
    source = root / "dev/mp4/id00001/vid"
    blocked = source / f"{count // 2:05d}.mp4"  # in the first chunk of 16 jobs: the other worker takes the second
    blocked.unlink()
    os.mkfifo(blocked)
    cmd = [sys.executable, "-m", "preprocess.voxceleb2", "--root", str(root), "--out", str(out), "--recrop", str(rc),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # never reached on a working machine: only a hang ends here
    while not list(rc.rglob("*.mp4")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    children = {int(c) for t in os.listdir(f"/proc/{proc.pid}/task")
                for c in open(f"/proc/{proc.pid}/task/{t}/children").read().split()}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "rerun the same command to continue" in err and "Traceback" not in err
    assert children and not (rc / "dev/mp4/id00001/vid" / blocked.name).exists()  # stopped mid-run

    def running():
        return [c for c in children if os.path.exists(f"/proc/{c}") and open(f"/proc/{c}/stat").read().split()[2] != "Z"]
    while running() and time.time() < deadline:  # exited workers may take a moment to be reaped
        time.sleep(0.05)
    assert not running()  # no worker left running
    assert not (out / "train.csv").exists()
    blocked.unlink()
    shutil.copy(source / "00000.mp4", blocked)
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(rows(out / "train.csv")) == count and len(list(rc.rglob("*.mp4"))) == count
    assert not list(rc.rglob("*.partial.mp4"))


def test_first_impressions(tmp_path, capsys):
    root = tmp_path / "fi"
    rng = np.random.default_rng(0)
    names = {"train": ["a.mp4", "b.mp4", "c.mp4"], "val": ["d.mp4"], "test": ["e.mp4", "f.mp4"]}
    truth = {}
    for part, fname in first_impressions.FILES.items():
        d = {t: {} for t in first_impressions.TRAITS + ["interview"]}
        for n in names[part]:
            for t in d:
                d[t][n] = float(rng.uniform())
            truth[n] = [d[t][n] for t in first_impressions.TRAITS]
            sub = root / f"{part}-1" / f"{part}80_01"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / n).touch()
        with open(root / fname, "wb") as f:
            pickle.dump(d, f, protocol=2)
    first_impressions.main(["--root", str(root), "--out", str(tmp_path / "out")])
    for part in ("train", "val", "test"):
        got = rows(tmp_path / "out" / f"{part}.csv")
        assert sorted(r[0].rsplit("/", 1)[1] for r in got) == names[part]
        for r in got:
            assert r[0].startswith(f"{part}-1/")
            np.testing.assert_allclose([float(v) for v in r[1:]], truth[r[0].rsplit("/", 1)[1]], atol=1e-5)
    assert "train 3, val 1, test 2" in capsys.readouterr().out
    with open(root / "annotation_test.pkl", "wb") as f:
        pickle.dump({"openness": {}}, f)
    assert run_entry(first_impressions.main, ["--root", str(root), "--out", str(tmp_path / "x")]) == 2
    assert "expected a dict with keys" in capsys.readouterr().err


class _Payload:
    """What a crafted annotation file can carry: pickle calls ``os.system(...)`` while loading it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_annotation_pickle_runs_nothing(tmp_path, capsys):
    root, marker = tmp_path / "fi", tmp_path / "ran"
    root.mkdir()
    for fname in first_impressions.FILES.values():
        with open(root / fname, "wb") as f:
            pickle.dump({t: {"a.mp4": _Payload(marker)} for t in first_impressions.TRAITS}, f, protocol=2)
    assert run_entry(first_impressions.main, ["--root", str(root), "--out", str(tmp_path / "out")]) == 2
    assert not marker.exists()
    assert "refusing to load posix.system" in capsys.readouterr().err


def test_avcaffe(tmp_path, capsys):
    root = tmp_path / "avcaffe"
    subjects = ["aiim001", "aiim003", "aiim004", "aiim107"]  # 001 and 107 are official test subjects
    lines = {"arousal": [], "valence": []}
    for si, s in enumerate(subjects):
        for t in (1, 2):
            for c in range(3):
                f = root / avcaffe.CLIPS / s / f"task_{t}" / f"{s}_task_{t}_{c}.avi"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.touch()
            lines["arousal"].append(f"{s}_task_{t},{avcaffe.CLASSES['arousal'][(si + t) % 5]}")
            lines["valence"].append(f"{s}_task_{t},{(si * t) % 5}")  # numeric form is accepted too
    (root / "ground_truths").mkdir()
    for k, v in lines.items():
        (root / "ground_truths" / f"{k}.txt").write_text("\n".join(v) + "\n")
    avcaffe.main(["--root", str(root), "--out", str(tmp_path / "out")])
    for target in ("arousal", "valence"):
        tr = rows(tmp_path / "out" / target / "train.csv")
        te = rows(tmp_path / "out" / target / "test.csv")
        assert len(tr) == 12 and len(te) == 12
        assert {r[0].split("/")[2] for r in te} == {"aiim001", "aiim107"}
        for r in tr + te:
            si, t = subjects.index(r[0].split("/")[2]), int(r[0].split("/")[3][-1])
            assert int(r[1]) == ((si + t) % 5 if target == "arousal" else (si * t) % 5)
    assert "arousal: 0 Excited, 1 Wide-awake" in capsys.readouterr().out
    (root / "ground_truths" / "valence.txt").write_text("aiim001_task_1,Happy\n")
    assert run_entry(avcaffe.main, ["--root", str(root), "--out", str(tmp_path / "x")]) == 2
    assert "is not one of" in capsys.readouterr().err


def test_werewolf_xl(tmp_path, capsys):
    root = tmp_path / "ww"
    lines = ["clip,session,speaker,arousal,valence,dominance"]
    for s in range(1, 13):
        for c in range(4):
            rel = f"clips/session{s}/clip{c}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
            lines.append(f"{rel},session{s},p{c},{s / 10},{-c / 4},{0.5}")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    werewolf_xl.main(["--root", str(root), "--out", str(tmp_path / "out")])
    seen = []
    for k in range(1, 6):
        tr = rows(tmp_path / "out" / f"split{k:02d}" / "train.csv")
        te = rows(tmp_path / "out" / f"split{k:02d}" / "test.csv")
        assert len(tr) + len(te) == 48 and all(len(r) == 4 for r in tr + te)
        s_tr, s_te = {r[0].split("/")[1] for r in tr}, {r[0].split("/")[1] for r in te}
        assert not s_tr & s_te  # session-independent
        seen += sorted(s_te)
        for r in te:
            s = int(r[0].split("/")[1][7:])
            assert float(r[1]) == pytest.approx(s / 10) and float(r[3]) == 0.5
    assert sorted(seen) == sorted(f"session{s}" for s in range(1, 13))
    (root / "annotations.csv").write_text("clip,session,arousal\n")
    assert run_entry(werewolf_xl.main, ["--root", str(root), "--out", str(tmp_path / "x")]) == 2
    assert "missing column(s) ['valence', 'dominance']" in capsys.readouterr().err

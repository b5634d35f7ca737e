"""The six datasets with public reference splits: official layouts built from the reference
lists themselves, then each preprocessing script must reproduce the lists line for line."""
import gzip
from pathlib import Path


from engine.cli import run_entry
from preprocess import crema_d, dfew, enterface, ferv39k, mafw, ravdess


def ref(data_dir, rel):
    with gzip.open(data_dir / "reference_splits" / rel, "rt") as f:
        return [line.strip() for line in f if line.strip()]


def lines(path: Path):
    return path.read_text().splitlines()


def assert_same(out: Path, data_dir, ref_dir: str, names):
    for name in names:
        for part in ("train", "test"):
            got = lines(out / name / f"{part}.csv")
            want = ref(data_dir, f"{ref_dir}/{name}/{part}.csv.gz")
            assert len(got) == len(set(got)) == len(want)
            assert set(got) == set(want), f"{name}/{part}"
        assert not (out / name / "val.csv").exists()


def test_dfew(tmp_path, data_dir, capsys):
    root = tmp_path / "DFEW"
    ids = set()
    for k in range(1, 6):
        for part, d in dfew.SPLIT_DIRS.items():
            rows = [l.split() for l in ref(data_dir, f"dfew/org/split{k:02d}/{part}.csv.gz")]
            f = root / "EmoLabel_DataSplit" / d / f"set_{k}.csv"
            f.parent.mkdir(parents=True, exist_ok=True)
            # Official files: integer clip ids without padding, labels 1-7.
            f.write_text("video_name,label\n" + "".join(f"{int(p.rsplit('/', 1)[1])},{int(l) + 1}\n"
                                                       for p, l in rows))
            ids.update(p for p, _ in rows)
    for p in ids:
        (root / p).mkdir(parents=True)
    assert dfew.main(["--root", str(root), "--out", str(tmp_path / "out")]) is None
    assert_same(tmp_path / "out", data_dir, "dfew/org", [f"split{k:02d}" for k in range(1, 6)])
    printed = capsys.readouterr().out
    assert "0 happy" in printed and "6 fear" in printed
    assert "split01: train 9356, test 2341" in printed


def test_ferv39k(tmp_path, data_dir, capsys):
    root = tmp_path / "FERV39k"
    setup = root / "4_setups" / "All_scenes"
    setup.mkdir(parents=True)
    for part in ("train", "test"):
        rows = [l.split() for l in ref(data_dir, f"ferv39k/all_scenes/{part}.csv.gz")]
        (setup / f"{part}_All.csv").write_text(
            "".join(f"{p.split('/', 1)[1]} {ferv39k.CLASSES[int(l)]}\n" for p, l in rows))
        for p, _ in rows:
            (root / p).mkdir(parents=True)
    out = tmp_path / "out"
    ferv39k.main(["--root", str(root), "--out", str(out)])
    for part in ("train", "test"):
        assert sorted(lines(out / f"{part}.csv")) == sorted(ref(data_dir, f"ferv39k/all_scenes/{part}.csv.gz"))
    assert "train 31088, test 7847" in capsys.readouterr().out


def test_mafw(tmp_path, data_dir):
    root = tmp_path / "MAFW"
    ids = set()
    for k in range(1, 6):
        for part in ("train", "test"):
            rows = [l.split() for l in ref(data_dir, f"mafw/single/split{k:02d}/{part}.csv.gz")]
            f = root / mafw.SETS / f"set_{k}" / f"{part}.txt"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("".join(f"{p.rsplit('/', 1)[1]}.mp4 {mafw.CLASSES[int(l)]}\n" for p, l in rows))
            ids.update(p for p, _ in rows)
    for p in ids:
        (root / p).mkdir(parents=True)
    mafw.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert_same(tmp_path / "out", data_dir, "mafw/single", [f"split{k:02d}" for k in range(1, 6)])


def all_paths(data_dir, ref_dir, n):
    return [l.split()[0] for k in range(1, n + 1) for l in ref(data_dir, f"{ref_dir}/split{k:02d}/test.csv.gz")]


def test_crema_d(tmp_path, data_dir, capsys):
    root = tmp_path / "CREMA-D"
    (root / "VideoFlash").mkdir(parents=True)
    for p in all_paths(data_dir, "crema-d", 5):
        (root / "VideoFlash" / (p.split("/", 1)[1] + ".flv")).touch()
    (root / "VideoFlash" / "README.txt").touch()
    crema_d.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert_same(tmp_path / "out", data_dir, "crema-d", [f"split{k:02d}" for k in range(1, 6)])
    assert "7442 clips from 91 actors" in capsys.readouterr().out


def test_ravdess(tmp_path, data_dir):
    root = tmp_path / "RAVDESS"
    for p in all_paths(data_dir, "ravdess", 6):
        f = root / (p.split("/", 1)[1] + ".mp4")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
        # Audio-visual (01) and song (02 channel) files sit beside them and must be ignored.
        f.with_name("01" + f.name[2:]).touch()
        f.with_name(f.name[:3] + "02" + f.name[5:]).touch()
    ravdess.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert_same(tmp_path / "out", data_dir, "ravdess", [f"split{k:02d}" for k in range(1, 7)])


def test_enterface(tmp_path, data_dir, capsys):
    root = tmp_path / "eNTERFACE05"
    for i, p in enumerate(all_paths(data_dir, "enterface", 5)):
        _, subj, emo, sent, stem = p.split("/")
        # Official folder names: blanks instead of '_', and not always the same case.
        subj = subj.replace("_", " ") if i % 3 else subj.replace("subject_", "Subject ")
        f = root / subj / emo / sent.replace("_", " ") / (stem + ".avi")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
    f = root / "subject 6" / "anger" / "sentence 1" / "s6_an_1.avi"  # left out by the protocol
    f.parent.mkdir(parents=True)
    f.touch()
    enterface.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert_same(tmp_path / "out", data_dir, "enterface", [f"split{k:02d}" for k in range(1, 6)])
    assert "1287 clips from 43 subjects" in capsys.readouterr().out


def test_layout_errors_are_clear(tmp_path, capsys):
    (tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)").mkdir(parents=True)
    assert run_entry(dfew.main, ["--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "DFEW split file not found" in capsys.readouterr().err
    bad = tmp_path / "f" / "4_setups" / "All_scenes"
    bad.mkdir(parents=True)
    (bad / "train_All.csv").write_text("Action/Happy/0001,Happy\n")
    assert run_entry(ferv39k.main, ["--root", str(tmp_path / "f"), "--out", str(tmp_path / "o")]) == 2
    assert "expected '<scene>/<Emotion>/<id> <Emotion>'" in capsys.readouterr().err
    assert run_entry(crema_d.main, ["--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "CREMA-D video folder not found" in capsys.readouterr().err

"""Helper of tests/test_engine_files.py, run inside a private mount namespace with a small tmpfs at
argv[1]: each case fills the file system to leave a little space, makes one of the project's
writers write there, and reports (as one JSON object on stdout) the error it ended with, the files
left, and whether the files that were there before are intact."""
import contextlib
import io
import json
import os
import shutil
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(sys.argv[1])
VIDEO = sys.argv[2]
PAGE = os.sysconf("SC_PAGE_SIZE")


def pages(n):
    return -(-n // PAGE)


def leave(free_pages):
    """Fill ROOT so that ``free_pages`` pages stay free."""
    filler = ROOT / "filler"
    if filler.exists():
        filler.unlink()
    stat = os.statvfs(ROOT)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - free_pages * PAGE, 0))


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def frame(rows, names=("a", "b", "c")):
    rng = np.random.default_rng(0)
    scores = rng.random((rows, len(names)))
    data = {"id": [f"video/{i:06d}.mp4" for i in range(rows)], "target": rng.integers(0, len(names), rows),
            "prediction": scores.argmax(1)}
    data.update({f"score_{n}": scores[:, k] for k, n in enumerate(names)})
    return pd.DataFrame(data)


def metrics_of(f, names=("a", "b", "c")):
    from engine.reports import metrics_from_frame
    return metrics_from_frame(f, "classification", list(names))


def outcome(call):
    """``(error message or None, stdout)`` of ``call()``."""
    from engine.files import WriteError
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            call()
    except WriteError as e:
        return str(e), out.getvalue()
    return None, out.getvalue()


def case(folder_name):
    folder = ROOT / folder_name
    folder.mkdir()
    return folder


def reports_over_old_ones(name, rows, free_pages):
    """Reports of 5 rows in a folder, then ``rows`` rows over them with ``free_pages(new rows)``
    pages of disk left: the error, what the folder holds, and whether the old reports are intact."""
    from engine.reports import write_reports
    folder = case(name)
    old = frame(5)
    write_reports(str(folder), old, metrics_of(old), "cls", ["a", "b", "c"])
    before = {p: (folder / p).read_bytes() for p in ("pred.csv", "metrics.json")}
    new = frame(rows)
    leave(free_pages(new))
    error, _ = outcome(lambda: write_reports(str(folder), new, metrics_of(new), "cls", ["a", "b", "c"]))
    intact = all((folder / p).read_bytes() == b for p, b in before.items())
    return {"error": error, "left": listing(folder), "intact": intact}


def reports_whole_or_not_at_all():
    return reports_over_old_ones("reports", 20000, lambda new: 2)


def metrics_json_after_pred_csv():
    """pred.csv fits, metrics.json does not: neither is replaced (they are renamed together)."""
    return reports_over_old_ones("metrics", 400, lambda new: pages(len(new.to_csv(index=False).encode())))


def plot():
    from engine.reports import write_reports
    folder = case("plot")
    new = frame(5)
    scratch = Path("/tmp") / f"plot{os.getpid()}"
    write_reports(str(scratch), new, metrics_of(new), "cls", ["a", "b", "c"])
    need = sum(pages((scratch / p).stat().st_size) for p in ("pred.csv", "metrics.json"))
    shutil.rmtree(scratch)
    leave(need)
    error, _ = outcome(lambda: write_reports(str(folder), new, metrics_of(new), "cls", ["a", "b", "c"]))
    whole = json.loads((folder / "metrics.json").read_text())["provenance"]["pred_csv"]["rows"] == 5
    return {"error": error, "left": listing(folder), "intact": whole}


def log_txt():
    from engine.logger import append_log
    folder = case("log")
    append_log(str(folder), {"epoch": 0, "train_loss": 1.0})
    append_log(str(folder), {"epoch": 1, "train_loss": 0.5})
    before = (folder / "log.txt").read_bytes()
    leave(0)
    error, _ = outcome(lambda: append_log(str(folder), {"epoch": 2, "train_loss": 0.25, "note": "x" * 5000}))
    return {"error": error, "left": listing(folder), "intact": (folder / "log.txt").read_bytes() == before}


def features():
    from engine.files import write_together
    folder = case("features")
    leave(4)
    error, _ = outcome(lambda: write_together([
        (str(folder / "features.npy"), lambda f: np.save(f, np.zeros((200, 512), np.float32))),
        (str(folder / "features_index.csv"), lambda f: f.write(b"row,path,view\n"))]))
    return {"error": error, "left": listing(folder), "intact": True}


def args_json():
    from engine.files import write_json
    folder = case("args")
    leave(0)
    error, _ = outcome(lambda: write_json(str(folder / "args.json"), {"args": {"x": "y" * 10000}}))
    return {"error": error, "left": listing(folder), "intact": True}


def feature_shard():
    from tools.extract_features import save_shard, shard_done
    folder = case("shards")
    (folder / "shards").mkdir()
    leave(2)
    rows = [{"video": i, "path": f"v{i}.mp4", "label": 0, "window": 0, "start_frame": 0, "end_frame": 15}
            for i in range(64)]
    error, _ = outcome(lambda: save_shard(str(folder), 0, np.zeros((64, 768), np.float32), rows, []))
    return {"error": error, "left": listing(folder), "intact": not shard_done(str(folder), 0)}


def face_crops():
    from preprocess.common import RunError, sample_paths
    folder = case("crop")
    os.symlink(VIDEO, folder / "clip.avi")
    leave(4)
    args = Namespace(face_dir="faces", crop=True, size=224, format="jpg", workers=1)
    import preprocess.face_crop as fc
    original = fc.CropConfig

    def short(*a, **kw):  # the first 24 frames, every 3rd: enough to fill the disk, quick to detect
        return original(*a, **{**kw, "frame_step": 3, "max_frames": 24})
    fc.CropConfig = short
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            sample_paths(folder, ["clip.avi"], args)
        error = None
    except RunError as e:
        error = str(e)
    finally:
        fc.CropConfig = original
    report = json.loads((folder / "faces" / "face_crop_report.json").read_text())
    return {"error": error, "left": listing(folder), "intact": "unreadable" not in error if error else False,
            "statuses": [v["status"] for v in report["videos"]], "stdout": out.getvalue()}


def tensorboard():
    from engine.logger import TensorboardLogger
    folder = case("tb")
    tb = TensorboardLogger(str(folder))
    leave(0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for step in range(3000):
            tb.update(head="loss", step=step, loss=float(step), lr=1e-3)
        tb.flush()
    return {"error": None, "left": listing(folder), "intact": True, "stdout": out.getvalue()}


def one_error_line():
    """Through an entry point's error handling (engine.pool_folds --output_dir on the full disk)."""
    from engine import pool_folds
    from engine.reports import write_reports
    scratch = Path("/tmp") / f"fold{os.getpid()}"
    f = frame(5)
    write_reports(str(scratch), f, metrics_of(f), "cls", ["a", "b", "c"])
    folder = case("pooled")
    leave(0)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = pool_folds.main(["--pred_dirs", str(scratch), "--output_dir", str(folder)])
    shutil.rmtree(scratch)
    return {"error": err.getvalue(), "status": status, "left": listing(folder), "intact": True}


CASES = [reports_whole_or_not_at_all, metrics_json_after_pred_csv, plot, log_txt, features, args_json,
         feature_shard, face_crops, tensorboard, one_error_line]

if __name__ == "__main__":
    results = {}
    for fn in CASES:
        results[fn.__name__] = fn()
        (ROOT / "filler").unlink(missing_ok=True)
    print(json.dumps(results))

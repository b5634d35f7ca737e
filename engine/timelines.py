"""Per-face outputs of prediction on a video with several people (`tools/predict.py --faces all`):
for each tracked face a time series (CSV and JSON) and a timeline plot, and one contact sheet
showing every face's crop so the files can be told apart.

    <out_dir>/face_<k>.csv    one row per window: frames, seconds, time (window centre), one
                              column per class (prob_<name>) or regression output (<name>)
    <out_dir>/face_<k>.json   the face (its frames, seconds, where it is) with its windows
    <out_dir>/face_<k>.png    the timeline: time on x, one line per class or output
    <out_dir>/faces.png       the contact sheet: each face's best-detected crop, its time range
                              and its most likely class
"""
from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from .files import atomic_file, save_figure, write_json

_FACE_FILE = re.compile(r"face_\d+\.(csv|json|png)$")


def window_time(window: dict, fps: float | None) -> float:
    """The centre of a window, in seconds (in frames without a frame rate)."""
    centre = (window["start_frame"] + window["end_frame"] + 1) / 2
    return round(centre / fps, 3) if fps else centre


def face_frame(face: dict, names: list, task: str, fps: float | None) -> pd.DataFrame:
    """The time series of one face: a row per window."""
    rows = []
    for i, w in enumerate(face["windows"]):
        row = {"face": face["face"], "window": i, "start_frame": w["start_frame"], "end_frame": w["end_frame"],
               "time_s" if fps else "time_frame": window_time(w, fps), "start_s": w.get("start_s"),
               "end_s": w.get("end_s")}
        values = w["outputs"] if task == "regression" else {f"prob_{n}": w["probs"][n] for n in names}
        rows.append({**row, **values})
    return pd.DataFrame(rows)


def write_face_outputs(out_dir: str, result: dict, thumbnails: list, names: list, task: str) -> list[str]:
    """Write every face of one video's `result` (from `Predictor.predict_faces`); returns the paths.
    The face files of an earlier run in `out_dir` that this one does not rewrite are removed, so
    the folder never mixes two runs' faces."""
    os.makedirs(out_dir, exist_ok=True)
    fps, paths = result.get("fps"), []
    for face, thumb in zip(result["faces"], thumbnails):
        stem = os.path.join(out_dir, f"face_{face['face']}")
        with atomic_file(stem + ".csv") as f:
            face_frame(face, names, task, fps).to_csv(f, index=False)
        write_json(stem + ".json", {"video": result["video"], "task": task, "names": names, "fps": fps,
                                    "num_frames": result["num_frames"], **face})
        plot_timeline(stem + ".png", face, thumb, names, task, fps, result["num_frames"])
        paths += [stem + ".csv", stem + ".json", stem + ".png"]
    sheet = os.path.join(out_dir, "faces.png")
    plot_contact_sheet(sheet, result["faces"], thumbnails, task, fps)
    for name in os.listdir(out_dir):
        if _FACE_FILE.fullmatch(name) and os.path.join(out_dir, name) not in paths:
            os.remove(os.path.join(out_dir, name))
    return paths + [sheet]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _span(face: dict, fps: float | None) -> str:
    if fps:
        return f"{face['start_frame'] / fps:.1f}-{(face['end_frame'] + 1) / fps:.1f} s"
    return f"frames {face['start_frame']}-{face['end_frame']}"


def plot_timeline(path: str, face: dict, thumbnail, names: list, task: str, fps: float | None,
                  num_frames: int) -> None:
    """Time on x over the whole video (so the faces' plots line up), one line per class; the time
    the face is on screen shaded, its crop on the left."""
    plt = _pyplot()
    fig = plt.figure(figsize=(10, 3.2))
    ax = fig.add_axes([0.2, 0.16, 0.6, 0.72])
    t = [window_time(w, fps) for w in face["windows"]]
    scale = fps or 1
    ax.axvspan(face["start_frame"] / scale, (face["end_frame"] + 1) / scale, color="0.92", zorder=0)
    key = "outputs" if task == "regression" else "probs"
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, n in enumerate(names):
        ax.plot(t, [w[key][n] for w in face["windows"]], marker="o", ms=3, lw=1.5, color=colours(i % colours.N),
                label=n)
    ax.set_xlim(0, num_frames / scale)
    if task != "regression":
        ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_ylabel("output" if task == "regression" else "probability")
    top = f", mostly {face['top'][0][0]}" if task != "regression" else ""
    ax.set_title(f"face {face['face']}: {_span(face, fps)}{top}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if thumbnail is not None:
        inset = fig.add_axes([0.01, 0.2, 0.16, 0.64])
        inset.imshow(thumbnail)
        inset.set_axis_off()
        inset.set_title(f"face {face['face']}", fontsize=9)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def plot_contact_sheet(path: str, faces: list, thumbnails: list, task: str, fps: float | None) -> None:
    """Each face's crop in a row, labelled with its number, time range and most likely class."""
    plt = _pyplot()
    k = max(1, len(faces))
    cols = min(k, 6)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, face, thumb in zip(axes.ravel(), faces, thumbnails):
        if thumb is not None:
            ax.imshow(thumb)
        label = f"face {face['face']}\n{_span(face, fps)}"
        if task != "regression":
            label += f"\n{face['top'][0][0]} {face['top'][0][1]:.2f}"
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def mean_box(boxes: np.ndarray) -> list[float]:
    """Where a face is on average: centre x, centre y, side, in frame pixels."""
    return [round(float(v), 1) for v in np.nanmean(boxes, axis=0)]

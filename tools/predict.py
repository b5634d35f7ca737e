"""Predict facial expressions (or regression targets) of videos with a fine-tuned SVFAP checkpoint.

Inputs are video files, folders of frames, or folders of videos / frame folders (searched
recursively). Each video is cut into clips of ``num_frames`` frames ``sampling_rate`` apart, seen
exactly as the test split sees them (resized as the checkpoint was trained, by default to a square;
centre crop; ImageNet normalisation);
with --crop, faces are first cropped by the preprocessing's detector and tracker. Windows:

  sliding  (default) clips covering the whole video, starts --window_stride frames apart (default:
           one clip span, so consecutive clips touch); the last clip ends on the last frame
  uniform  the test protocol: --num_segments clips placed evenly on the video's stride grid
  centre   the test protocol's rule for one clip: the middle one

Per window: class probabilities (softmax) or the regression outputs; per video: their mean (as the
multi-view evaluation merges views).

With --faces all, every face of the video is found and followed (preprocess/faces.py: dlib's face
detector and a tracker by box overlap; a shot cut or a long absence ends a face's track), and each
track is predicted on its own: windows over the frames it is on screen, cut out around its box.
--out_dir then gets, per video (a folder named after it) and face k: face_<k>.csv / .json (the
time series: one row per window) and face_<k>.png (its timeline), and faces.png, a contact sheet
of every face's crop so you can tell who is who. The model and its input come from the checkpoint's ``args``
(model, input_size, num_frames, sampling_rate, data_set, nb_classes, stage_depths, ...); flags
override them. Class names come from the dataset registry (``data_set``) or --class_names.

Examples:
  python -m tools.predict --checkpoint out/dfew_fold1/checkpoint-99.pth clip.mp4
  python -m tools.predict --checkpoint ckpt.pth --crop --topk 3 raw_videos/ --out_json preds.json --out_csv preds.csv
  python -m tools.predict --checkpoint demo/checkpoint-best.pth --class_names demo/classes.txt demo/frames/test/
  python -m tools.predict --checkpoint ckpt.pth --windows uniform --num_segments 2 --device cpu video.avi
  python -m tools.predict --checkpoint ckpt.pth --faces all --out_dir timelines/ interview.mp4
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
import torch

from datasets.inference import ClipSpec, load_windows
from datasets.registry import output_names, sampling_rate_of
from datasets.sampling import WINDOW_MODES, chunk_windows, plan_windows
from datasets.video_io import (BACKENDS, DEFAULT_BACKEND, VideoReadError, count_frames, find_inputs, iter_frames,
                               open_source, video_fps, video_rotation)
from engine.cli import HelpFormatter, UserError, run_entry
from engine.options import add_model_options, typed_options
from engine.runtime import pick_device
from engine.files import write_json, write_text
from engine.timelines import mean_box, write_face_outputs
from models import model_from_checkpoint
from preprocess.face_crop import frame_cropper
from preprocess.faces import CROP_MARGIN, TrackConfig, track_cropper, track_faces


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", help="video files, frame folders, or folders of them")
    p.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint (run_finetune.py output)")
    p.add_argument("--class_names", default=None, help="comma-separated names, or a file with one per line")
    p.add_argument("--topk", type=int, default=3, help="classes printed per window and video")
    p.add_argument("--windows", default="sliding", choices=WINDOW_MODES, help="which clips of each video (see above)")
    p.add_argument("--window_stride", type=int, default=None, help="frames between sliding window starts")
    p.add_argument("--num_segments", type=int, default=2, help="clips per video with --windows uniform")
    p.add_argument("--crop", action="store_true",
                   help="crop faces first (preprocess/face_crop.py's tracker); --faces all always crops")
    p.add_argument("--faces", default="one", choices=["one", "all"],
                   help="one: the whole video (with --crop, its largest face); all: every face tracked and "
                        "predicted on its own, with per-face time series and plots in --out_dir")
    p.add_argument("--out_dir", default=None, help="with --faces all: where the per-face files go")
    p.add_argument("--min_face", type=float, default=0.15,
                   help="with --faces all: smallest face to find, as a fraction of the frame's shorter side")
    p.add_argument("--detect_every", type=int, default=2, help="with --faces all: run the detector every n frames")
    p.add_argument("--crop_size", type=int, default=224, help="face crop side before the model's resize")
    p.add_argument("--crop_margin", type=float, default=CROP_MARGIN,
                   help="fraction of the face box added on each side of the crop")
    p.add_argument("--batch_size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--max_frames", type=int, default=1024,
                   help="decoded frames held at once; longer videos are processed in chunks of windows")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help="video decoder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--show_windows", action="store_true", help="also print every window")
    p.add_argument("--out_json", default=None, help="write all results (windows included) as JSON")
    p.add_argument("--out_csv", default=None, help="one row per window and one per video ('video')")
    add_model_options(p)
    return p


class Predictor:
    """A fine-tuned model with the clip settings of its checkpoint; ``predict(path)`` → result dict."""

    def __init__(self, checkpoint, given=None, *, force=False, class_names=None, device="cpu"):
        self.model, self.cfg = model_from_checkpoint(checkpoint, given, force, kind="classifier")
        cfg = self.cfg
        self.task, self.names = output_names(self.model.num_classes, cfg.get("data_set"), cfg.get("task"),
                                             cfg.get("nb_classes"), cfg.get("num_targets"),
                                             class_names, recorded=cfg.get("class_names"))
        self.device = torch.device(device)
        self.model.to(self.device)
        embed = self.model.patch_embed
        self.num_frames = embed.num_frames
        self.rate = sampling_rate_of(cfg)
        self.spec = ClipSpec(embed.img_size[0], cfg.get("short_side_size"), resize=cfg.get("frame_resize"))

    @torch.no_grad()
    def scores(self, clips, batch_size=8):
        """Per-clip probabilities (classification) or outputs (regression), ``(W, K)`` float64."""
        outs = [self.model(clips[i:i + batch_size].to(self.device)).float().cpu()
                for i in range(0, len(clips), batch_size)]
        out = torch.cat(outs).double()
        return (out if self.task == "regression" else out.softmax(-1)).numpy()

    def predict(self, path, *, windows="sliding", window_stride=None, num_segments=2, crop_faces=None,
                batch_size=8, max_frames=1024, backend=DEFAULT_BACKEND, topk=3):
        n = count_frames(path, backend)
        plan = plan_windows(n, self.num_frames, self.rate, windows, window_stride, num_segments)
        fps = video_fps(path)
        scores, faces = self._score_windows(path, plan, crop_faces, batch_size, max_frames, backend)
        result = {"video": path, "num_frames": n, "fps": fps, **self._describe(scores.mean(0), topk),
                  "windows": self._windows(plan, scores, fps, topk)}
        rotation = video_rotation(path) if os.path.isfile(path) else 0
        if rotation:
            result["rotation"] = rotation
            print(f"note: {path}: its display matrix rotates it by {rotation} degrees; the frames were turned upright",
                  file=sys.stderr)
        if faces:
            result["face_crop"] = {"frames": sum(f["frames"] for f in faces),
                                   "detections": sum(f["detections"] for f in faces)}
        return result

    def predict_faces(self, path, tracking: TrackConfig, *, windows="sliding", window_stride=None, num_segments=2,
                      crop_size=224, crop_margin=CROP_MARGIN, batch_size=8, max_frames=1024,
                      backend=DEFAULT_BACKEND, topk=3):
        """Every face of the video on its own: (result with a "faces" list, each face's thumbnail)."""
        tracks, n = track_faces(iter_frames(path), tracking)
        if not tracks:
            raise VideoReadError(f"{path}: no face found in {n} frames (smaller faces: lower --min_face)")
        fps = video_fps(path)
        faces = []
        for k, track in enumerate(tracks, 1):
            plan = [w + track.start for w in plan_windows(len(track), self.num_frames, self.rate, windows,
                                                          window_stride, num_segments)]
            crop = track_cropper(track, crop_size, crop_margin)
            scores, _ = self._score_windows(path, plan, crop, batch_size, max_frames, backend)
            faces.append({"face": k, "start_frame": track.start, "end_frame": track.end,
                          **_seconds([track.start, track.end], fps), "detections": len(track.frames),
                          "box": mean_box(track.raw()), **self._describe(scores.mean(0), topk),
                          "windows": self._windows(plan, scores, fps, topk)})
        result = {"video": path, "num_frames": n, "fps": fps, "faces": faces}
        return result, [track.thumbnail for track in tracks]

    def _score_windows(self, path, plan, crop, batch_size, max_frames, backend):
        """Window scores, a chunk of --max_frames decoded frames at a time from one open reader (a
        long video is decoded once, front to back), with a progress bar when there are several."""
        from tqdm import tqdm
        per_window, faces = [], []
        chunks = chunk_windows(plan, max_frames)
        # A window that ends on the last frame may start before the previous chunk ended.
        source = open_source(path, backend, lookback=self.num_frames * self.rate)
        try:
            with tqdm(total=len(plan), desc=os.path.basename(os.path.normpath(path)), unit="window",
                      disable=len(chunks) < 2, file=sys.stderr) as bar:
                for chunk in chunks:
                    batch = load_windows(path, chunk, self.spec, backend, crop, source=source)
                    per_window.append(self.scores(batch.clips, batch_size))
                    if batch.face is not None:
                        faces.append(batch.face)
                    bar.update(len(chunk))
        finally:
            source.close()
        return np.concatenate(per_window), faces

    def _windows(self, plan, scores, fps, topk):
        return [{"start_frame": int(w[0]), "end_frame": int(w[-1]), "frames": w.tolist(), **_seconds(w, fps),
                 **self._describe(s, topk)} for w, s in zip(plan, scores)]

    def _describe(self, score, topk):
        values = {name: float(v) for name, v in zip(self.names, score)}
        if self.task == "regression":
            return {"outputs": values}
        order = np.argsort(-score, kind="stable")[:topk]
        return {"probs": values, "top": [[self.names[i], float(score[i])] for i in order]}


def _seconds(window, fps):
    if not fps:
        return {}
    return {"start_s": round(int(window[0]) / fps, 3), "end_s": round((int(window[-1]) + 1) / fps, 3)}


def _entries(r):
    """(face number or None, label, entry): the windows and the whole of a video, or of each face."""
    if "faces" not in r:
        yield from ((None, str(i), w) for i, w in enumerate(r["windows"]))
        yield None, "video", {**r, "start_frame": 0, "end_frame": r["num_frames"] - 1}
        return
    for face in r["faces"]:
        yield from ((face["face"], str(i), w) for i, w in enumerate(face["windows"]))
        yield face["face"], "face", face


def results_frame(results, names, task):
    """One row per window and one per video (window = 'video'), for CSV; with --faces all one per
    window and one per face (window = 'face'), numbered in a 'face' column."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"video": r["video"], "window": "error", "error": r["error"]})
            continue
        for face, label, e in _entries(r):
            row = {"video": r["video"], **({"face": face} if face is not None else {}), "window": label,
                   "start_frame": e["start_frame"], "end_frame": e["end_frame"],
                   "start_s": e.get("start_s"), "end_s": e.get("end_s")}
            if task == "regression":
                row.update(e["outputs"])
            else:
                row.update(top1=e["top"][0][0], top1_prob=e["top"][0][1], **{f"prob_{n}": e["probs"][n] for n in names})
            rows.append(row)
    return pd.DataFrame(rows)


def format_table(results, task, show_windows=False):
    rows = []
    for r in results:
        name = os.path.basename(os.path.normpath(r["video"]))
        if "error" in r:
            rows.append({"video": name, "windows": "-", "prediction": f"ERROR: {r['error']}"})
            continue
        wholes = [(name, r)] if "faces" not in r else [
            (f"{name} face {f['face']} [{f['start_frame']}-{f['end_frame']}]", f) for f in r["faces"]]
        for label, whole in wholes:
            items = [(label, whole)] + ([(f"  [{w['start_frame']}-{w['end_frame']}]", w) for w in whole["windows"]]
                                        if show_windows else [])
            for i, (text_label, e) in enumerate(items):
                if task == "regression":
                    text = "  ".join(f"{k} {v:+.3f}" for k, v in e["outputs"].items())
                else:
                    text = "  ".join(f"{c} {p:.3f}" for c, p in e["top"])
                rows.append({"video": text_label, "windows": len(whole["windows"]) if i == 0 else "",
                             "prediction": text})
    header = "outputs" if task == "regression" else "top classes (probability)"
    frame = pd.DataFrame(rows).rename(columns={"prediction": header})
    width = max(len(str(v)) for v in frame["video"])
    return frame.to_string(index=False, justify="left", formatters={"video": lambda v: f"{v:<{width}}"})


def face_folder(out_dir, path, used):
    """A folder of --out_dir named after the video, made unique among the inputs (always inside
    --out_dir: an input named ``.`` or ``..`` is named after the folder it is)."""
    stem = os.path.splitext(os.path.basename(os.path.abspath(path)))[0].strip(". ") or "video"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return os.path.join(out_dir, name)


def check_face_options(args):
    if args.faces != "all":
        return None
    if not args.out_dir:
        raise UserError("--faces all writes a time series and a plot per face: give --out_dir")
    if not 0 < args.min_face <= 1 or args.detect_every < 1:
        raise UserError("--min_face must be in (0, 1] (a fraction of the frame's shorter side) and "
                        "--detect_every at least 1")
    return TrackConfig(min_face=args.min_face, detect_every=args.detect_every)


def run(argv=None):
    args = get_parser().parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        raise UserError("--topk and --batch_size must be at least 1")
    tracking = check_face_options(args)
    videos = find_inputs(args.inputs, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    device = pick_device(args.device)
    predictor = Predictor(args.checkpoint, typed_options(args), force=args.force_config, class_names=args.class_names,
                          device=device)
    crop_faces = None
    if args.crop and tracking is None:
        crop_faces = frame_cropper(args.crop_size, args.crop_margin)
    print(f"{predictor.cfg.get('model')}: {len(predictor.names)} {'targets' if predictor.task == 'regression' else 'classes'}, "
          f"clips of {predictor.num_frames} frames every {predictor.rate} at {predictor.spec.input_size}px; "
          f"{len(videos)} video(s) on {device}", file=sys.stderr)
    options = {"windows": args.windows, "window_stride": args.window_stride, "num_segments": args.num_segments,
               "batch_size": args.batch_size, "max_frames": args.max_frames, "backend": args.backend, "topk": args.topk}
    results, used = [], set()
    for path in videos:
        try:
            if tracking is None:
                results.append(predictor.predict(path, crop_faces=crop_faces, **options))
                continue
            result, thumbnails = predictor.predict_faces(path, tracking, crop_size=args.crop_size,
                                                         crop_margin=args.crop_margin, **options)
            result["out_dir"] = face_folder(args.out_dir, path, used)
            write_face_outputs(result["out_dir"], result, thumbnails, predictor.names, predictor.task)
            results.append(result)
        except VideoReadError as e:  # one bad video must not stop a folder
            results.append({"video": path, "error": str(e)})
    print(format_table(results, predictor.task, args.show_windows))
    if tracking is not None:
        for r in results:
            if "faces" in r:
                print(f"{len(r['faces'])} face(s) of {r['video']}: {r['out_dir']}", file=sys.stderr)
    if args.out_json:
        write_json(args.out_json, {"checkpoint": args.checkpoint, "task": predictor.task, "names": predictor.names,
                                   "config": {k: v for k, v in predictor.cfg.items()},
                                   "sampling_rate": predictor.rate, "windows": args.windows, "videos": results})
    if args.out_csv:
        write_text(args.out_csv, results_frame(results, predictor.names, predictor.task).to_csv(index=False))
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"{len(failed)} of {len(results)} videos failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    """Exit status: 0 done, 1 some inputs failed, 2 a usage or checkpoint error (message on stderr)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Class probabilities (or regression outputs) of a face video from a model written by tools.export.

It needs only onnxruntime, numpy and PyAV, never this repository, so it can be copied next to the
.onnx file and run anywhere (``pip install onnxruntime numpy av``). It builds clips as
tools.predict does by default (clips side by side over the video, the last ending on the last
frame) and averages their softmax, or their outputs for a regression model; everything it needs
comes from the graph's metadata. The models were trained on face crops: crop the faces first
(``python -m preprocess.face_crop``).

  python -m tools.onnx_predict model.onnx face_video.mp4
  python onnx_predict.py model.onnx face_video.mp4
"""
import argparse
import json

import av
import numpy as np
import onnxruntime as ort


def crop(frame, meta):
    """The frame resized as the model's training resized it, then its centre input_size square."""
    side, size = int(meta["short_side_size"]), int(meta["input_size"])
    w, h = frame.width, frame.height
    if meta.get("frame_resize", "square") == "square":
        w = h = side
    else:  # keep_aspect: the short side to short_side_size
        w, h = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
    if (w, h) != (frame.width, frame.height):
        frame = frame.reformat(width=w, height=h, interpolation="AREA")
    top, left = round((h - size) / 2), round((w - size) / 2)
    return frame.to_ndarray(format="rgb24")[top:top + size, left:left + size]


def windows(n, frames_per_clip, rate):
    """Frame indices of each clip: side by side over n frames, the last ending on the last frame."""
    span = (frames_per_clip - 1) * rate + 1
    if n < span:  # shorter than one clip: frames 0, rate, 2 rate, ..., the last of them repeated
        grid = list(range(0, n, rate))
        return [np.array(grid + grid[-1:] * (frames_per_clip - len(grid)))]
    starts = list(range(0, n - span + 1, span))
    starts += [n - span] if starts[-1] + span < n else []
    return [s + rate * np.arange(frames_per_clip) for s in starts]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("model", help="the .onnx file tools.export wrote")
    p.add_argument("video", help="a face video (any format PyAV reads)")
    args = p.parse_args(argv)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean, std = (np.array(json.loads(meta[k]), np.float32) for k in ("mean", "std"))
    with av.open(args.video) as container:
        frames = [crop(f, meta) for f in container.decode(video=0)]
    scores = []
    for w in windows(len(frames), int(meta["num_frames"]), int(meta["sampling_rate"])):
        clip = (np.stack([frames[i] for i in w]) / np.float32(255) - mean) / std  # (T, H, W, 3)
        (out,) = session.run(None, {"clip": clip.transpose(3, 0, 1, 2)[None].astype(np.float32)})
        e = np.exp(out[0] - out[0].max())
        scores.append(out[0] if meta["task"] == "regression" else e / e.sum())
    named = list(zip(json.loads(meta["class_names"]), np.mean(scores, axis=0)))
    if meta["task"] != "regression":
        named.sort(key=lambda item: -item[1])
    for name, score in named:
        print(f"{name:<12} {score:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A small synthetic facial-expression video set that can only be learnt from motion.

    python -m datasets.demo --out DIR [--seed 0] [--num_classes 6] [--size 64]

Each clip shows a drawn face (head, eyes, brows, mouth) and one expression
unfolding: every facial part has an activation in [0, 1], and the class says
which part changes and in which direction over the clip (onset or offset:
mouth opening / closing, smile appearing / fading, head lowering / raising;
7 and 8 classes add brows raising / lowering). The moving part sweeps the range
that the still parts are drawn from, so a single frame hardly tells the class:
the direction over time does. Nuisances: face position, size, drift, skin /
background / feature colours, pixel noise.

Writes DIR/{train,val,test}.csv (`<path> <label>`, paths relative to DIR; a
quarter of the samples are frame folders, the rest mp4), DIR/pretrain.csv
(the training clips, label 0) and DIR/classes.txt. Deterministic from --seed.
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
from PIL import Image

from .video_io import write_mp4

CLASSES = ["mouth_opening", "mouth_closing", "smiling", "smile_fading", "head_lowering", "head_raising",
           "brows_raising", "brows_lowering"]
# Which activation each class moves, and which way (+1 rise, -1 fall). One-way changes rather
# than oscillations: a transformer starts almost linear, and a consistent change over the clip
# is visible to its linear part (tubelet embedding and temporal convolutions), so a tiny TPSBT
# learns these within minutes on a CPU, where oscillating parts (whose frame differences cancel
# in the mean) kept it at chance for as long.
MOTION = {0: ("mouth", 1), 1: ("mouth", -1), 2: ("smile", 1), 3: ("smile", -1), 4: ("nod", 1), 5: ("nod", -1),
          6: ("brows", 1), 7: ("brows", -1)}
PARTS = ("mouth", "brows", "eyes", "nod", "shake", "smile")
SPLITS = {"train": 0, "val": 1, "test": 2}


def activations(label: int, frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.linspace(0.0, 1.0, frames)
    acts = {p: np.full(frames, rng.uniform(0.05, 0.95)) for p in PARTS}
    part, direction = MOTION[label]
    lo, hi = rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)
    t0, t1 = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    s = np.clip((t - t0) / (t1 - t0), 0, 1)
    ramp = lo + (hi - lo) * s * s * (3 - 2 * s)      # smoothstep
    acts[part] = ramp if direction > 0 else ramp[::-1]
    for p in PARTS:  # small frame-to-frame jitter, so still parts are not frozen
        acts[p] = np.clip(acts[p] + rng.normal(0, 0.02, frames), 0, 1)
    return acts


def render(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 `(frames, size, size, 3)` RGB clip."""
    acts = activations(label, frames, rng)
    scale = 4  # draw large, then area-downsample: sub-pixel motion stays visible
    big = size * scale
    # Mild colour nuisance: with fully random palettes a tiny model spends its few minutes of
    # training on colour invariance instead of on the motion that defines the class.
    bg = np.full(3, rng.uniform(70, 150)) + rng.uniform(-15, 15, 3)
    skin = np.array([215.0, 170.0, 140.0]) + rng.uniform(-20, 20, 3)
    ink = rng.uniform(10, 50, 3)
    # A large face with large part motions: the demo must be learnable by a tiny model in minutes.
    rx = big * rng.uniform(0.34, 0.40)
    ry = rx * rng.uniform(1.05, 1.2)
    cx0, cy0 = big / 2 + rng.uniform(-0.05, 0.05, 2) * big
    drift = rng.uniform(-0.03, 0.03, 2) * big
    noise = rng.uniform(2, 6)
    out = np.empty((frames, size, size, 3), np.uint8)
    for k in range(frames):
        f = k / max(frames - 1, 1)
        cx = cx0 + drift[0] * f + (acts["shake"][k] - 0.5) * 0.25 * rx
        cy = cy0 + drift[1] * f + (acts["nod"][k] - 0.5) * 0.4 * ry
        img = np.empty((big, big, 3), np.uint8)
        img[:] = bg.astype(np.uint8)
        P = lambda x, y: (int(round(x)), int(round(y)))  # noqa: E731
        cv2.ellipse(img, P(cx, cy), P(rx, ry), 0, 0, 360, skin.tolist(), -1, cv2.LINE_AA)
        eye_y = cy - 0.2 * ry
        for side in (-1, 1):
            ex = cx + side * 0.4 * rx
            eh = 1 + acts["eyes"][k] * 0.2 * ry
            cv2.ellipse(img, P(ex, eye_y), P(0.17 * rx, eh), 0, 0, 360, ink.tolist(), -1, cv2.LINE_AA)
            by = eye_y - (0.2 + 0.35 * acts["brows"][k]) * ry
            cv2.line(img, P(ex - 0.22 * rx, by), P(ex + 0.22 * rx, by), ink.tolist(),
                     max(1, int(0.08 * ry)), cv2.LINE_AA)
        smile = acts["smile"][k]
        mh = 2 + (acts["mouth"][k] * 0.4 + smile * 0.1) * ry
        mw = (0.2 + 0.35 * smile) * rx
        cv2.ellipse(img, P(cx, cy + 0.48 * ry), P(mw, mh), 0, 0, 360,
                    (0.6 * ink).tolist(), -1, cv2.LINE_AA)
        # A smile bares the teeth: the mouth brightens as it widens, where opening darkens it.
        cv2.ellipse(img, P(cx, cy + 0.48 * ry), P(0.8 * mw, 0.1 * smile * ry), 0, 0, 360,
                    (240, 240, 235), -1, cv2.LINE_AA)
        small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        small += rng.normal(0, noise, small.shape)
        out[k] = np.clip(small, 0, 255).astype(np.uint8)
    return out


def write_frames(folder: str, clip: np.ndarray, ext: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for k, frame in enumerate(clip, 1):
        # Unpadded numbers (1, 2, ..., 10): readers must sort naturally. Pillow,
        # not cv2: see video_io on decord breaking OpenCV's PNG codec.
        Image.fromarray(frame).save(os.path.join(folder, f"img_{k}.{ext}"), quality=90)


def generate(out: str, seed: int = 0, num_classes: int = 6, size: int = 64, frames: int = 48,
             train_per_class: int = 80, eval_per_class: int = 10, gop: int = 16) -> dict[str, int]:
    if not 6 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 6..{len(CLASSES)}")
    counts = {}
    for split, split_id in SPLITS.items():
        per_class = train_per_class if split == "train" else eval_per_class
        lines = []
        for i in range(per_class * num_classes):
            label = i % num_classes
            rng = np.random.default_rng([seed, split_id, i])
            clip = render(label, frames, size, rng)
            name = f"{split}_{i:04d}_{CLASSES[label]}"
            if i % 4 == 3:
                rel = os.path.join("frames", split, name)
                write_frames(os.path.join(out, rel), clip, "png" if i % 8 == 7 else "jpg")
            else:
                rel = os.path.join("videos", split, name + ".mp4")
                os.makedirs(os.path.join(out, "videos", split), exist_ok=True)
                write_mp4(os.path.join(out, rel), clip, gop=gop)
            lines.append(f"{rel} {label}\n")
        with open(os.path.join(out, f"{split}.csv"), "w") as f:
            f.writelines(lines)
        counts[split] = len(lines)
        if split == "train":
            with open(os.path.join(out, "pretrain.csv"), "w") as f:
                f.writelines(line.rsplit(" ", 1)[0] + " 0\n" for line in lines)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in CLASSES[:num_classes])
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_classes", type=int, default=6)
    ap.add_argument("--size", type=int, default=64, help="frame side in pixels")
    ap.add_argument("--frames", type=int, default=48, help="frames per clip")
    ap.add_argument("--train_per_class", type=int, default=80)
    ap.add_argument("--eval_per_class", type=int, default=10, help="val and test clips per class")
    ap.add_argument("--gop", type=int, default=16,
                    help="mp4 keyframe interval (short: clips seek instead of decoding from the start)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    counts = generate(args.out, args.seed, args.num_classes, args.size, args.frames,
                      args.train_per_class, args.eval_per_class, args.gop)
    print(f"demo dataset in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f" clips, {args.num_classes} classes")


if __name__ == "__main__":
    main()

"""How far the clips' pixels are from the release's PIL operations, and what the training
augmentation costs per clip (docs/recipes.md quotes the numbers).

    python -m tools.benchmark.fidelity [--video Megamind.avi] [--rounds 5]

Pixels: max and mean |delta| in uint8 levels between each step here and the release's own
operation, on real frames at their own size and resized square (PIL, 256x256; the release's DFEW
frames are 256x256): the squash and aspect-keeping resizes (torchvision, antialiased bilinear,
against PIL's bilinear resize), RandAugment's warps (OpenCV bicubic with PIL's map and edge,
against timm's PIL ops with bicubic resampling) and Sharpness, the random resized crop (uint8
against the release's float interpolation), the multi-scale crop's resize, and the whole training
chain with the same seeds (against the same chain with timm's PIL ops per frame and the float
crop). Frames, boxes, draws and order are the same by construction (tests/test_datasets_release_rules.py);
only resampling and rounding remain.

Cost: CPU milliseconds (this process, one thread) per 16-frame clip of the training augmentation
after decoding (squash to 160, RandAugment rand-m7-n4-mstd0.5-inc1, random resized crop, flip), on
256x256 frames: this project's RandAugment, and timm's PIL ops applied frame by frame (the
simplest exact equivalent of the release's); in interleaved rounds, the median.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import cv2
import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment as A

from datasets import transforms as T

MEGAMIND = "/usr/share/doc/opencv-doc/examples/data/Megamind.avi"
AA = "rand-m7-n4-mstd0.5-inc1"
WARPS = [("Rotate", A.rotate, 15.0), ("ShearX", A.shear_x, 0.2), ("ShearY", A.shear_y, -0.2),
         ("TranslateXRel", A.translate_x_rel, 0.17), ("TranslateYRel", A.translate_y_rel, -0.13)]


def read_frames(path, count, first=40, step=12):
    """``count`` RGB frames, ``step`` apart from frame ``first`` (Megamind.avi opens on black)."""
    cap = cv2.VideoCapture(path)
    frames, index = [], 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index >= first and (index - first) % step == 0:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        index += 1
    cap.release()
    if not frames:
        raise SystemExit(f"error: no frames read from {path}")
    return np.stack(frames)


def pil(frames, fn):
    return np.stack([np.asarray(fn(Image.fromarray(np.ascontiguousarray(f)))) for f in frames])


def delta(ours, ref):
    d = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
    return d.max(), d.mean()


def frames_of(clip):
    return T.to_frames(clip).numpy()


class PilRandAugment(T.ClipRandAugment):
    """The same draw, each op by timm on each PIL frame: the release's RandAugment pixels."""

    def __call__(self, clip):
        frames = clip.permute(0, 2, 3, 1).numpy()
        ops = np.random.choice(self.ra.ops, self.ra.num_layers, replace=self.ra.choice_weights is None,
                               p=self.ra.choice_weights)
        images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        for op in ops:
            args = T._record_args(op, T._TINY)
            if args is not None:
                images = [op.aug_fn(img, *args, **op.kwargs) for img in images]
        return torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2)


def chain(frames, rand_augment, size, float_crop=False):
    """Squash, RandAugment, random resized crop, flip; the crop in float (the release's) or uint8."""
    clip = T.resize_frames(T.to_clip_tensor(np.ascontiguousarray(frames)), size)
    clip = rand_augment(clip)
    top, left, h, w = T.random_resized_box(*clip.shape[-2:])
    if float_crop:
        x = torch.nn.functional.interpolate(clip[..., top:top + h, left:left + w].float(), size=(size, size),
                                            mode="bilinear", align_corners=False)
    else:
        x = T.resized_crop(clip, top, left, h, w, size, antialias=False).float()
    if np.random.uniform() < 0.5:
        x = x.flip(-1)
    return x.permute(0, 2, 3, 1).numpy()


def pixel_rows(frames, size=160, seeds=20):
    rows = []
    clip = T.to_clip_tensor(frames)
    h, w = frames.shape[1:3]
    squashed = pil(frames, lambda i: i.resize((size, size), Image.BILINEAR))
    rows.append((f"squash resize to {size}x{size}", *delta(frames_of(T.resize_frames(clip, size)), squashed)))
    kept = frames_of(T.resize_frames(clip, size, "keep_aspect"))
    rows.append((f"keep-aspect resize to {kept.shape[2]}x{kept.shape[1]}",
                 *delta(kept, pil(frames, lambda i: i.resize((kept.shape[2], kept.shape[1]), Image.BILINEAR)))))
    fill = (128, 128, 128)
    for name, fn, arg in WARPS:
        ours = T.warp_frames(frames, T._affine_coefficients(name, (arg,), h, w), fill)
        ref = pil(frames, lambda i: fn(i, arg, fillcolor=fill, resample=Image.BICUBIC))
        rows.append((f"RandAugment {name} {arg}", *delta(ours, ref)))
    for factor in (0.3, 1.7):
        rows.append((f"RandAugment Sharpness {factor}", *delta(T.sharpen_frames(frames, factor),
                                                              pil(frames, lambda i: A.sharpness(i, factor)))))
    top, left, bh, bw = h // 7, w // 5, h // 2, w // 3
    ours = frames_of(T.resized_crop(clip, top, left, bh, bw, size, antialias=False))
    ref = torch.nn.functional.interpolate(clip[..., top:top + bh, left:left + bw].float(), size=(size, size),
                                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    rows.append(("random resized crop (uint8 vs float)", *delta(ours, ref)))
    side = int(min(h, w) * 0.875)
    ours = frames_of(T.resized_crop(clip, 0, 0, side, side, size))
    ref = pil(frames, lambda i: i.crop((0, 0, side, side)).resize((size, size), Image.BILINEAR))
    rows.append(("multi-scale crop resize", *delta(ours, ref)))
    ours_ra, pil_ra = T.ClipRandAugment(AA, size), PilRandAugment(AA, size)
    worst, means = 0.0, []
    for seed in range(seeds):
        np.random.seed(seed), random.seed(seed)
        a = chain(frames, ours_ra, size)
        np.random.seed(seed), random.seed(seed)
        b = chain(squashed, pil_ra, size, float_crop=True)  # PIL's squash: chain() leaves it as it is
        m, mean = delta(a, b)
        worst, means = max(worst, m), means + [mean]
    rows.append((f"training chain, {seeds} seeds (mean of means)", worst, float(np.mean(means))))
    return rows


def cost(frames, rounds, clips=20):
    """Median CPU ms per clip of the training augmentation with each RandAugment."""
    size = 160
    variants = {"this project's RandAugment": T.ClipRandAugment(AA, size),
                "timm's PIL ops per frame": PilRandAugment(AA, size)}
    times = {k: [] for k in variants}
    order = list(variants)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            np.random.seed(r), random.seed(r)
            start = time.process_time()
            for _ in range(clips):
                chain(frames, variants[name], size)
            times[name].append((time.process_time() - start) / clips * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=MEGAMIND, help="real video whose first frames are compared")
    p.add_argument("--frames", type=int, default=4, help="frames compared")
    p.add_argument("--seeds", type=int, default=20, help="seeds of the whole training chain compared")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the cost measurement")
    p.add_argument("--clips", type=int, default=20, help="clips per variant and round of the cost measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = read_frames(args.video, max(args.frames, 16))
    square = np.stack([np.asarray(Image.fromarray(f).resize((256, 256), Image.BILINEAR)) for f in frames])
    for label, data in ((f"{frames.shape[2]}x{frames.shape[1]}", frames[:args.frames]),
                        ("256x256 (PIL-resized)", square[:args.frames])):
        print(f"== pixels: this project against the release's operation, {label} frames, uint8 levels")
        print(f"{'step':<44} {'max |d|':>8} {'mean |d|':>9}")
        for name, worst, mean in pixel_rows(data, seeds=args.seeds):
            print(f"{name:<44} {worst:>8.1f} {mean:>9.3f}")
    print("== CPU ms per 16-frame clip of the training augmentation (256x256 frames to 160, one thread, median)")
    for name, ms in cost(square[:16], args.rounds, args.clips).items():
        print(f"{name:<44} {ms:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Clips per second of the training loaders (fine-tuning and pre-training), against a naive reader.

    python -m tools.benchmark.loader [--data DIR] [--frames 200] [--workers 1 2]

Without --data, the demo generator writes a set in a temporary folder, by default
shaped like the pre-training videos (VoxCeleb2: 224x224 at 25 fps, ~8 s, here with
a keyframe every second) and read like them (16 frames at stride 4, 160 px
crops); --frames, --size, --gop, --train_per_class reshape it (the demo run's own
set is `--frames 48 --size 64 --gop 16 --num_frames 8 --sampling_rate 6 --input_size 64`). How
much seeking can save is bounded by the video length over the clip span plus a
keyframe interval: one keyframe per video leaves little to skip. The training split is measured twice:
its mp4 samples and its frame-folder samples. "ours" is the dataset as training uses it
(decode / read only the frames of the clip): `VideoClsDataset` in train mode (RandAugment,
random erasing) for fine-tuning, and for the mp4s also `PretrainDataset` (face crop,
multi-scale crop, tube mask); "naive" is the same dataset and augmentations over a reader
that decodes every frame of the video (or reads every image of the folder) and then
samples. "decode only" times the readers alone, in this process, without augmentation,
for both video backends.
The machine may be shared and its speed drifts: decode-only figures are the best of
--repeats runs; the loaders are timed in turn (ours, naive, ours, naive, ...) for
--repeats rounds of at least --min_clips clips each, and a ratio is the median of the
rounds' ratios, so a slow spell slows both sides of it alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.annotations import read_annotations
from datasets.demo import generate
from datasets.finetune import VideoClsDataset
from datasets.pretrain import PretrainDataset
from datasets.sampling import random_window
from datasets.video_io import BACKENDS, FrameFolder, read_clips
from engine.runtime import keep_freed_host_memory


def naive_read(path, choose):
    """Decode every frame, then pick the clip's frames."""
    if os.path.isdir(path):
        src = FrameFolder(path)
        frames = src.get(range(src.num_frames))
    else:
        import decord
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    return [frames[ix] for ix in choose(len(frames))]


class NaiveDataset(VideoClsDataset):
    _read = staticmethod(naive_read)


class NaivePretrainDataset(PretrainDataset):
    _read = staticmethod(naive_read)


def best_of(repeats, fn):
    return max(fn() for _ in range(repeats))


def make_loader(ds, workers, batch_size):
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, timeout=300 if workers else 0)


def timed_epochs(loader, min_clips):
    """Clips/s over whole epochs of an already started loader, at least `min_clips` clips."""
    start, clips = time.perf_counter(), 0
    while clips < min_clips:
        clips += sum(len(batch[0]) for batch in loader)
    return clips / (time.perf_counter() - start)


def loader_rate(ds, workers, batch_size, min_clips=1):
    """Clips/s after a first epoch: worker start-up is left out."""
    loader = make_loader(ds, workers, batch_size)
    timed_epochs(loader, 1)
    return timed_epochs(loader, min_clips)


def paired_rates(datasets, workers, batch_size, rounds, min_clips):
    """Median clips/s of each dataset's loader and the median per-round ratio of the first
    to the second, their epochs taken in turn."""
    loaders = [make_loader(ds, workers, batch_size) for ds in datasets]
    for loader in loaders:
        timed_epochs(loader, 1)
    rates = [[timed_epochs(loader, min_clips) for loader in loaders] for _ in range(rounds)]
    per_loader = [statistics.median(r[i] for r in rates) for i in range(len(loaders))]
    return per_loader, statistics.median(r[0] / r[1] for r in rates)


def decode_rate(paths, read, args):
    def choose(n):
        return [random_window(n, args.num_frames, args.sampling_rate)]
    start = time.perf_counter()
    for p in paths:
        read(p, choose)
    return len(paths) / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder with train.csv (default: generate the demo set)")
    ap.add_argument("--frames", type=int, default=200, help="frames per generated clip")
    ap.add_argument("--size", type=int, default=224, help="side of generated frames")
    ap.add_argument("--train_per_class", type=int, default=6)
    ap.add_argument("--num_frames", type=int, default=16)
    ap.add_argument("--sampling_rate", type=int, default=4)
    ap.add_argument("--input_size", type=int, default=160)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                    help="backends of the training loader, each measured in turn")
    ap.add_argument("--gop", type=int, default=25, help="keyframe interval of generated mp4s")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min_clips", type=int, default=64, help="clips per timed loader round")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    keep_freed_host_memory()  # as the training entry points do on CPU; the workers inherit it

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = tmp
            t = time.perf_counter()
            generate(data, size=args.size, frames=args.frames, train_per_class=args.train_per_class,
                     eval_per_class=1, gop=args.gop)
            print(f"generated the demo set ({args.frames} frames of {args.size}x{args.size}) "
                  f"in {time.perf_counter() - t:.0f} s")
        samples = read_annotations(os.path.join(data, "train.csv"))
        kinds = {"videos": [s for s in samples if not os.path.isdir(s.path)],
                 "frame folders": [s for s in samples if os.path.isdir(s.path)]}
        print(f"clip: {args.num_frames} frames at stride {args.sampling_rate}, "
              f"{args.input_size}px, batch {args.batch_size}; "
              f"torch threads 1; {os.cpu_count()} CPUs")
        for kind, subset in kinds.items():
            if not subset:
                continue
            csv = os.path.join(tmp, f"bench_{kind.replace(' ', '_')}.csv")
            with open(csv, "w") as f:
                f.writelines(f"{s.path} {s.label}\n" for s in subset)
            paths = [s.path for s in subset]
            print(f"\n{kind} ({len(subset)} clips)")
            naive_dec = best_of(args.repeats, lambda: decode_rate(paths, naive_read, args))
            for backend in (("pyav", "decord") if kind == "videos" else ("-",)):
                ours_dec = best_of(args.repeats, lambda: decode_rate(
                    paths, lambda p, c: read_clips(p, c, backend if backend != "-" else "decord"), args))
                label = f"decode only ({backend})" if backend != "-" else "read only"
                print(f"  {label:<40} ours {ours_dec:7.1f}  naive {naive_dec:7.1f} "
                      f"clips/s  ({ours_dec / naive_dec:.2f}x)", flush=True)
            clip = dict(num_frames=args.num_frames, sampling_rate=args.sampling_rate,
                        input_size=args.input_size)
            loaders = {"fine-tuning": (VideoClsDataset, NaiveDataset, dict(mode="train", **clip))}
            if kind == "videos":  # pre-training reads VoxCeleb2's mp4s
                loaders["pre-training"] = (PretrainDataset, NaivePretrainDataset, dict(face_crop=True, **clip))
            for what, (ours_cls, naive_cls, kw) in loaders.items():
                for backend in (args.backend if kind == "videos" else ["decord"]):
                    for w in args.workers:
                        (ours, naive), ratio = paired_rates(
                            [ours_cls(csv, backend=backend, **kw), naive_cls(csv, **kw)],
                            w, args.batch_size, args.repeats, args.min_clips)
                        label = f"{what} loader, {w} worker{'' if w == 1 else 's'}"
                        if kind == "videos":
                            label += f" ({backend})"
                        print(f"  {label:<40} ours {ours:7.1f}  naive {naive:7.1f} "
                              f"clips/s  ({ratio:.2f}x)", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

"""Clips per second of the training loaders (fine-tuning and pre-training), against a naive reader that
decodes every frame and then samples, and their CPU time per delivered clip (what sets how many GPUs a
node's cores can feed; tools/benchmark/loader_cpu.py). docs/benchmarks.md says how each is measured.

    python -m tools.benchmark.loader [--data DIR] [--frames 200] [--workers 1 2] [--device cpu]

Without --data it generates a set shaped like VoxCeleb2's (224 px at 25 fps, ~8 s, a keyframe a
second) and reads it like pre-training does; the demo run's own set is `--frames 48 --size 64 --gop 16
--num_frames 8 --sampling_rate 6 --input_size 64`. The machine may be shared: loaders are timed in
alternating rounds and a ratio is the median of the rounds' ratios.
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
from datasets.build import multiple_samples_collate
from datasets.demo import generate
from datasets.finetune import VideoClsDataset
from datasets.pretrain import PretrainDataset
from datasets.sampling import pretrain_indices
from datasets.video_io import BACKENDS, FrameFolder, count_frames, read_clips
from engine.cli import HelpFormatter
from engine.runtime import keep_freed_host_memory
from preprocess.voxceleb2 import recrop_clip

from . import loader_cpu


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
        return [pretrain_indices(n, args.num_frames, args.sampling_rate)]
    start = time.perf_counter()
    for p in paths:
        read(p, choose)
    return len(paths) / (time.perf_counter() - start)


def get_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data", help="folder with train.csv (default: generate the demo set)")
    ap.add_argument("--frames", type=int, default=200, help="frames per generated clip")
    ap.add_argument("--size", type=int, default=224, help="side of generated frames")
    ap.add_argument("--train_per_class", type=int, default=6, help="generated training videos per class")
    ap.add_argument("--num_frames", type=int, default=16, help="frames per clip")
    ap.add_argument("--sampling_rate", type=int, default=4, help="stride between a clip's frames")
    ap.add_argument("--input_size", type=int, default=160, help="side of the clips")
    ap.add_argument("--batch_size", type=int, default=8, help="clips per batch")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts, each measured")
    ap.add_argument("--backend", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                    help="backends of the training loader, each measured in turn")
    ap.add_argument("--gop", type=int, default=25, help="keyframe interval of generated mp4s")
    ap.add_argument("--repeats", type=int, default=3, help="decode-only runs (best kept) and timed loader rounds")
    ap.add_argument("--min_clips", type=int, default=64, help="clips per timed loader round")
    cpu = ap.add_argument_group("CPU per delivered clip (one worker)")
    cpu.add_argument("--device", default="cpu", help="where the uint8 path's batch work runs (cpu, cuda)")
    cpu.add_argument("--num_samples", type=int, default=4, help="repeated sampling measured besides 1")
    cpu.add_argument("--ft_size", type=int, default=256, help="side of the generated fine-tuning set's frames")
    cpu.add_argument("--ft_frames", type=int, default=64, help="frames per clip of the generated fine-tuning set")
    cpu.add_argument("--cpu_rounds", type=int, default=5, help="rounds of the CPU measurement")
    cpu.add_argument("--cpu_clips", type=int, default=48, help="clips per loader and round (and at least 1 s)")
    cpu.add_argument("--cpu_seconds", type=float, default=1.0, help="least seconds per loader and round")
    return ap


def main(argv=None):
    args = get_parser().parse_args(argv)
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
        cpu_section(args, tmp, kinds["videos"], None if args.data else finetune_set(args, tmp))


def write_csv(path, rows):
    with open(path, "w") as f:
        f.writelines(f"{p} {label}\n" for p, label in rows)
    return path


def finetune_set(args, tmp):
    """Samples of a generated set shaped like DFEW's (--ft_size px, --ft_frames frames)."""
    out = os.path.join(tmp, "finetune")
    t = time.perf_counter()
    generate(out, size=args.ft_size, frames=args.ft_frames, train_per_class=args.train_per_class, eval_per_class=0,
             gop=args.gop)
    print(f"\ngenerated the fine-tuning set ({args.ft_frames} frames of {args.ft_size}x{args.ft_size}) "
          f"in {time.perf_counter() - t:.0f} s")
    return read_annotations(os.path.join(out, "train.csv"))


def recrop_all(videos, out):
    """Recrop the pre-training mp4s into `out`; prints what it cost."""
    start, frames, size, rows = time.process_time(), 0, [0, 0], []
    for k, s in enumerate(videos):
        dst = os.path.join(out, f"{k:04d}.mp4")
        error = recrop_clip(s.path, dst)
        if error:
            raise RuntimeError(error)
        frames += count_frames(dst)
        size[0], size[1] = size[0] + os.path.getsize(s.path), size[1] + os.path.getsize(dst)
        rows.append((dst, 0))
    seconds = time.process_time() - start
    print(f"  recrop (preprocess.voxceleb2 --recrop): {seconds / len(videos) * 1e3:.0f} CPU ms per source clip "
          f"of {frames / len(videos):.0f} frames, {seconds / frames * 1e3:.1f} ms a frame; "
          f"files {size[1] / size[0]:.0%} of the sources' size")
    return rows


def cpu_section(args, tmp, videos, ft_samples):
    """CPU ms per delivered clip (one worker) of both loaders."""
    L = loader_cpu
    clip = dict(num_frames=args.num_frames, sampling_rate=args.sampling_rate, input_size=args.input_size)
    print(f"\nCPU ms per delivered clip, 1 worker, batches of {args.batch_size} clips, the batch work on "
          f"{args.device}; median [min-max] of {args.cpu_rounds} rounds")
    configs = []
    if videos:
        configs += pretrain_configs(args, tmp, videos, dict(face_crop=True, **clip))
    samples = ft_samples if ft_samples is not None else read_annotations(os.path.join(args.data, "train.csv"))
    kinds = {"videos": [s for s in samples if not os.path.isdir(s.path)],
             "jpg frame folders": [s for s in samples if os.path.isdir(s.path) and any(
                 n.lower().endswith((".jpg", ".jpeg")) for n in os.listdir(s.path))]}
    for kind, subset in kinds.items():
        if subset:
            csv = write_csv(os.path.join(tmp, f"cpu_ft_{kind.split()[0]}.csv"), [(s.path, s.label) for s in subset])
            ds = VideoClsDataset(csv, mode="train", **clip)
            configs.append(L.Config(f"fine-tuning {kind}", ds, L.device_work(args.device, "finetune", reprob=0.25),
                                    batch_items=args.batch_size))
    L.measure(configs, args.cpu_rounds, args.cpu_clips, args.cpu_seconds, args.device)
    for line in L.report(configs):
        print(line, flush=True)


def pretrain_configs(args, tmp, videos, kw):
    """The pre-training loader with --num_samples 1 and N, on the mp4s and recropped."""
    L = loader_cpu
    source = write_csv(os.path.join(tmp, "cpu_pretrain.csv"), [(s.path, 0) for s in videos])
    recropped = write_csv(os.path.join(tmp, "cpu_recropped.csv"), recrop_all(videos, os.path.join(tmp, "recropped")))
    work = L.device_work(args.device, "pretrain")
    configs = []
    for csv, name in ((source, "pre-training"), (recropped, "pre-training, recropped")):
        for k in sorted({1, args.num_samples}):
            configs.append(L.Config(
                name + (f", num_samples {k}" if k > 1 else ""), PretrainDataset(csv, num_samples=k, **kw),
                work, batch_items=max(1, args.batch_size // k), collate=multiple_samples_collate if k > 1 else None))
    return configs


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

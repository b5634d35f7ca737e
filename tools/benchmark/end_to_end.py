"""End-to-end pre-training rows (tools.benchmark.gpu_check): the pre-training loader (generated
VoxCeleb2-shaped 224-px mp4s, or the user's clips; face crop, multi-scale crop, tube mask; uint8
batches, pinned on CUDA) with N workers feeding the training entry point's own step (targets,
normalisation, forward, loss, backward, AdamW) of `pretrain svfap_base`, against the same step fed
one batch already on the device.

The model-only and the end-to-end steps are timed in alternating rounds; a row's ratio is the
median of the rounds' end-to-end over model-only clips/s (1.0: the loader keeps up).
"""
import itertools
import os
import statistics
import tempfile
import time
from argparse import Namespace


from datasets.annotations import read_annotations
from datasets.demo import generate
from datasets.pretrain import PretrainDataset
from engine.loader import build_loader
from engine.runtime import grad_scaler
from engine.train_step import Stepper

from .report import Row
from .workloads import build_model, clip_shape, compiled_for, make_optimizer, sdpa_context, step_flops, sync, \
    training_loss

MODEL = "svfap_base"


def source_set(tmp, args):
    """The clips the loader reads (--e2e_data, an annotation file of the pre-training set, paths under
    --e2e_root), or a generated set shaped like VoxCeleb2's face tracks; listed often enough for the
    rounds."""
    if getattr(args, "e2e_data", None):
        samples = read_annotations(args.e2e_data, args.e2e_root)
    else:
        size, frames, gop = (48, 24, 8) if args.quick else (224, 200, 25)
        generate(tmp, size=size, frames=frames, train_per_class=2, eval_per_class=0, gop=gop)
        samples = read_annotations(os.path.join(tmp, "train.csv"))
    csv = os.path.join(tmp, "e2e.csv")
    clips = max(args.e2e_steps * args.batch_size * 4, 64)
    with open(csv, "w") as f:
        f.writelines(f"{samples[i % len(samples)].path} 0\n" for i in range(clips))
    return csv


def endless(loader):
    """Batches of a persistent-worker loader over as many epochs as asked for."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def timed_steps(step, batches, count, args):
    """Seconds per step over ``count`` steps, the device drained before and after."""
    sync(args)
    start = time.perf_counter()
    for _ in range(count):
        step(next(batches))
    sync(args)
    return (time.perf_counter() - start) / count


def e2e_rows(args):
    """Rows ``e2e pretrain svfap_base, N workers`` for each --e2e_workers, and the model-only row."""
    model = build_model(MODEL, True, args)
    frames, size, _ = clip_shape(model)
    flops = step_flops("pretrain", model, args) * args.batch_size
    run = compiled_for(model, args)
    stepper = Stepper(run, make_optimizer(model, args.batch_size, True), None,
                      grad_scaler(args.device, args.amp_dtype), Namespace(update_freq=1, clip_grad=None))
    with tempfile.TemporaryDirectory() as tmp:
        dataset = PretrainDataset(source_set(tmp, args), num_frames=frames, sampling_rate=2 if args.quick else 4,
                                  input_size=size, face_crop=True)
        compute_loss = training_loss("pretrain", model, run, args)

        def step(batch):
            with sdpa_context(args):
                stepper(compute_loss(batch), 0, 0)

        rows = [Row("e2e", f"e2e pretrain {MODEL}, model only", args.batch_size, model=MODEL, reps=0,
                    round_seconds=[], flops=flops)]
        for workers in args.e2e_workers:
            opts = Namespace(num_workers=workers, batch_size=args.batch_size, pin_mem=True, device=args.device,
                             seed=0)
            loader = build_loader(dataset, opts, train=True)
            batches = endless(loader)
            fixed = [t.to(args.device) for t in next(batches)]
            for _ in range(max(args.warmup, 1)):  # compilation, worker start-up, allocator
                step(fixed)
                step(next(batches))
            row = Row("e2e", f"e2e pretrain {MODEL}, {workers} worker{'s' if workers > 1 else ''}",
                      args.batch_size, model=MODEL, workers=workers, reps=args.repeats * args.e2e_steps,
                      round_seconds=[], flops=flops)
            alone = []
            for _ in range(args.repeats):
                alone.append(timed_steps(step, itertools.repeat(fixed), args.e2e_steps, args))
                row.round_seconds.append(timed_steps(step, batches, args.e2e_steps, args))
            row.seconds = statistics.median(row.round_seconds)
            row.ratio = statistics.median(a / b for a, b in zip(alone, row.round_seconds))
            row.vs = "clips/s vs model only"
            rows[0].round_seconds += alone
            rows.append(row)
            del batches, loader
    rows[0].reps = len(rows[0].round_seconds) * args.e2e_steps
    rows[0].seconds = statistics.median(rows[0].round_seconds)
    return rows


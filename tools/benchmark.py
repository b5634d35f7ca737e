"""Side-by-side performance benchmark: SVFAP against the VideoMAE baseline, in one run.

    python tools/benchmark.py [--device cuda] [--amp bf16|fp16] [--compile] [--markdown BENCHMARKS.md]

Rows, all measured in this run on this machine:
  matmul    a large square matmul of the device and dtype: the practical peak
  train     fine-tuning step (forward, loss, backward, AdamW with layer decay) of
            svfap_base, svfap_small and videomae_base at --batch_size
  infer     forward in eval mode, no grad
  pretrain  masked-autoencoder step at mask ratio 0.9 (target, forward, loss, backward, AdamW)
  memory    the training steps again at --memory_batch, without and with activation checkpointing
  loader    the fine-tuning training loader (VideoClsDataset over a generated demo set) for
            each --workers count, against the clips/s the svfap_base training step consumes

Step times are the median of --repeats steps after --warmup steps, in this process. FLOPs are
counted once per model with torch's flop counter (2 x MACs); a training step counts 3x the
forward. Peak memory is what a step needs beyond the process before the model exists (weights,
gradients, optimizer state, activations): on CPU the growth of peak RSS in a fresh process forked
for that row; on CUDA torch.cuda.max_memory_allocated. --quick shrinks every model and the
loader clips so that the whole run takes seconds (for tests; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import gc
import datetime
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from contextlib import nullcontext
from dataclasses import dataclass
from queue import Empty

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

import models  # noqa: E402,F401  (registers the timm models)
from datasets.masking import TubeMaskGenerator  # noqa: E402
from engine.common import autocast, grad_scaler, keep_freed_host_memory  # noqa: E402
from engine.optim import build_optimizer  # noqa: E402
from engine.pretrain import reconstruction_target  # noqa: E402
from engine.train_step import Stepper  # noqa: E402
from models import factory  # noqa: E402

# Short name -> (timm name of the fine-tuning model, registered size).
MODELS = {
    "svfap_base": ("svfap_base_patch16_160", factory.SVFAP_BASE),
    "svfap_small": ("svfap_small_patch16_160", factory.SVFAP_SMALL),
    "videomae_base": ("videomae_base_patch16_160", factory.VIDEOMAE_BASE),
}
BASELINE = "videomae_base"
PRETRAIN_MODELS = ["svfap_base", "videomae_base"]
MASK_RATIO = 0.9
GROUPS = ["train", "infer", "pretrain", "memory", "loader"]

# Targets of the issue: (what, threshold).
TARGET_SPEEDUP = 1.7
TARGET_CPU_PEAK_FRACTION = 0.50
TARGET_GPU_PEAK_FRACTION = 0.35
TARGET_MEMORY_CUT = 0.40


@dataclass
class Row:
    group: str  # matmul, train, infer, pretrain, memory or loader
    name: str
    batch: int
    model: str = ""
    step: str = ""  # what a step row runs: train, infer or pretrain
    ckpt: bool = False
    workers: int = 0
    reps: int = 0
    seconds: float | None = None  # per step (per batch for the loader)
    flops: float | None = None  # per step
    mem_mb: float | None = None
    ratio: float | None = None
    vs: str = ""
    round_seconds: list | None = None  # step rows: one time per round of the interleaved steps

    @property
    def clips_per_s(self):
        return self.batch / self.seconds if self.seconds else None

    @property
    def gflops(self):
        return self.flops / self.seconds / 1e9 if self.flops and self.seconds else None


# --------------------------------------------------------------------------------------------
# models and steps

def quick_overrides(short, pretrain):
    """A tiny model of the same family: same stage count, 1 block per stage, 1/8 of the width."""
    size = MODELS[short][1]
    width = size["embed_dim"] // 8
    kw = dict(img_size=32, stage_depths=tuple(1 for _ in size["stage_depths"]))
    if pretrain:
        return dict(kw, encoder_embed_dim=width, num_frames=8, decoder_embed_dim=32, decoder_num_heads=2,
                    decoder_depth=1)
    return dict(kw, embed_dim=width, all_frames=8)


def build_model(short, pretrain, args, ckpt=False):
    name = ("pretrain_" if pretrain else "") + MODELS[short][0]
    kw = quick_overrides(short, pretrain) if args.quick else {}
    if not pretrain:
        kw["drop_path_rate"] = 0.1  # the fine-tuning recipe's; pre-training uses none
    model = timm.create_model(name, **kw)
    model.set_grad_checkpointing(ckpt)
    return model.to(args.device)


def clip_shape(model):
    embed = model.encoder.patch_embed if hasattr(model, "encoder") else model.patch_embed
    tubelet, patch, _ = embed.proj.kernel_size
    t, h, w = embed.grid_size
    return 3, t * tubelet, h * patch, w * patch


def tube_masks(model, batch):
    embed = model.encoder.patch_embed
    generate = TubeMaskGenerator(embed.grid_size, MASK_RATIO)
    return torch.from_numpy(np.stack([generate() for _ in range(batch)]))


def make_inputs(model, batch, pretrain, args):
    x = torch.randn(batch, *clip_shape(model), device=args.device)
    if pretrain:
        return x, tube_masks(model, batch).to(args.device)
    return x, torch.randint(0, model.num_classes, (batch,), device=args.device)


def make_optimizer(model, batch, pretrain):
    # The recipes of docs/recipes.md; the values do not change the cost, the param groups do.
    opt = Namespace(opt="adamw", lr=(3e-4 if pretrain else 1e-3) * batch / 256, weight_decay=0.05,
                    opt_eps=1e-8, momentum=0.9, opt_betas=(0.9, 0.95) if pretrain else (0.9, 0.999),
                    layer_decay=None if pretrain else 0.75)
    optimizer = build_optimizer(opt, model)
    # Allocate AdamW's state now, so that a single measured step already has the steady-state
    # footprint (the state exists during every later forward and backward).
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def sdpa_context(args):
    # On CUDA, fail loudly instead of silently falling back to the math attention kernel.
    if args.device.startswith("cuda"):
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.CUDNN_ATTENTION])
    return nullcontext()


def make_step(group, model, batch, args):
    """A callable running one step of ``group`` ('train', 'infer' or 'pretrain') on ``model``."""
    pretrain = group == "pretrain"
    x, y = make_inputs(model, batch, pretrain, args)
    run = torch.compile(model) if args.compile else model
    if group == "infer":
        model.eval()

        def infer():
            with torch.no_grad(), sdpa_context(args), autocast(args.device, args.amp_dtype):
                run(x)
        return infer

    model.train()
    stepper = Stepper(model, make_optimizer(model, batch, pretrain), None, grad_scaler(args.device, args.amp_dtype),
                      Namespace(update_freq=1, clip_grad=None))
    if pretrain:
        tubelet, patch, _ = model.encoder.patch_embed.proj.kernel_size

    def train():
        with sdpa_context(args):
            if pretrain:
                with torch.no_grad():
                    target = reconstruction_target(x, y, patch, tubelet)
                with autocast(args.device, args.amp_dtype):
                    out = run(x, y)
                loss = F.mse_loss(out.float(), target)
            else:
                with autocast(args.device, args.amp_dtype):
                    out = run(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
            stepper(loss, 0, 0)
    return train


def step_flops(group, model, args):
    """FLOPs per clip of one step: the forward counted once, x3 for forward + backward."""
    x, y = make_inputs(model, 1, group == "pretrain", args)
    inputs = (x, y) if group == "pretrain" else (x,)
    return 2 * models.count_macs(model, *inputs) * (1 if group == "infer" else 3)


# --------------------------------------------------------------------------------------------
# timing and memory

def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, warmup, repeats, args):
    for _ in range(warmup):
        fn()
    sync(args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_start(args):
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_peak_mb(start, args):
    if args.device.startswith("cuda"):
        return (torch.cuda.max_memory_allocated() - start) / 2 ** 20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start) / 2 ** 20


def measure_step(row, args, warmup, repeats):
    """Seconds per step and peak memory; the memory is only meaningful in a fresh process on CPU."""
    start = memory_start(args)
    model = build_model(row.model, row.step == "pretrain", args, row.ckpt)
    step = make_step(row.step, model, row.batch, args)
    seconds = median_seconds(step, warmup, repeats, args)
    mem = memory_peak_mb(start, args)
    del step, model
    return seconds, mem


def _child(row, args, queue):
    torch.set_num_threads(args.threads)
    try:
        # The first step of any model maps kernels and libraries into memory (~100 MB); a tiny
        # step first puts that into the baseline instead of into the row's peak.
        measure_step(Row(row.group, "warm-up", 1, model=row.model, step=row.step, ckpt=row.ckpt),
                     Namespace(**{**vars(args), "quick": True}), 0, 1)
        queue.put(measure_step(row, args, 0, 1))
    except Exception as e:  # the parent reports it and goes on with the other rows
        queue.put(f"{type(e).__name__}: {e}")


class FreshProcesses:
    """Runs one measurement per freshly forked process (peak RSS only grows within a process).

    A fork server with torch and the models imported makes each process start in well under a
    second instead of the ~10 s of a new interpreter.
    """

    def __init__(self):
        # glibc raises its mmap threshold after large frees, so later freed tensors stay in the
        # heap and a process's peak RSS depends on the order of its allocations (the same
        # checkpointed step measured 2.3 or 2.7 GB). A fixed threshold makes every large
        # tensor its own mapping, returned on free: peak RSS follows the peak of live memory.
        # Read at exec, so it reaches the fork server and its children, not this process.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["torch", "timm", "models", "engine.optim", "engine.train_step",
                                         "engine.pretrain", "datasets.masking"])

    def measure(self, row, args):
        queue = self.ctx.Queue()
        proc = self.ctx.Process(target=_child, args=(row, args, queue))
        proc.start()
        result = None
        while result is None:
            try:
                result = queue.get(timeout=5)
            except Empty:
                if not proc.is_alive():  # killed, e.g. by the kernel for memory: never hang
                    try:
                        result = queue.get(timeout=1)
                    except Empty:
                        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})") from None
        proc.join()
        if isinstance(result, str):
            raise RuntimeError(result)
        return result


def matmul_peak(args):
    """(median seconds, flops, side, repeats) of a large square matmul in the models' compute dtype."""
    dtype = args.amp_dtype or torch.float32
    n = 256 if args.quick else (8192 if args.device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=args.device, dtype=dtype)
    b = torch.randn(n, n, device=args.device, dtype=dtype)
    reps = 3 if args.quick else (50 if args.device.startswith("cuda") else 10)
    return median_seconds(lambda: a @ b, max(2, reps // 5), reps, args), 2.0 * n ** 3, n, reps


# --------------------------------------------------------------------------------------------
# loader

def loader_rows(args, workers_list):
    """Clips/s of the fine-tuning training loader, at the clip shape the models take."""
    # Imported here: benchmark_loader pulls in decord, which the model rows do not need.
    from tools.benchmark_loader import loader_rate
    from datasets import VideoClsDataset, read_annotations
    from datasets.demo import generate

    frames, size = (8, 32) if args.quick else (16, 160)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # A few distinct clips, listed many times: decoding cost is per read, generation is slow.
        generate(tmp, size=args.loader_size, frames=args.loader_frames, train_per_class=2, eval_per_class=0)
        samples = read_annotations(os.path.join(tmp, "train.csv"))
        csv = os.path.join(tmp, "bench.csv")
        with open(csv, "w") as f:
            f.writelines(f"{samples[i % len(samples)].path} {samples[i % len(samples)].label}\n"
                         for i in range(args.loader_clips))
        for w in workers_list:
            ds = VideoClsDataset(csv, mode="train", num_frames=frames, sampling_rate=args.loader_stride,
                                 input_size=size)
            rate = loader_rate(ds, w, args.loader_batch)
            rows.append(Row("loader", f"loader {w} worker{'s' if w > 1 else ''}", args.loader_batch,
                            workers=w, reps=1, seconds=args.loader_batch / rate))
    return rows


# --------------------------------------------------------------------------------------------
# the run

def plan(args):
    """The rows to measure, in order, filtered by --only (groups or model names)."""
    rows = []
    for group in ("train", "infer", "pretrain"):
        names = PRETRAIN_MODELS if group == "pretrain" else list(MODELS)
        rows += [Row(group, f"{group} {m}", args.batch_size, model=m, step=group) for m in names]
    for step, names in (("train", list(MODELS)), ("pretrain", PRETRAIN_MODELS)):
        rows += [Row("memory", f"memory {step} {m}{' ckpt' if c else ''}", args.memory_batch, model=m, step=step,
                     ckpt=bool(c)) for m in names for c in (0, 1)]
    if args.only:
        rows = [r for r in rows if r.group in args.only or r.model in args.only]
    return rows


_START = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _START:6.1f} s] {msg}", flush=True)


def interleaved_seconds(rows, args):
    """Seconds per step of each row, one per round, the rows' steps taken in turn and in
    alternating order (A B C, C B A, A B C ...): a machine whose speed drifts (shared or
    throttled) slows every row alike, so the ratios hold even when the absolute numbers move.
    Also each row's peak memory (meaningful on CUDA only, where it is the growth of allocated
    memory over the row's build and warm-up)."""
    steps, mems = {}, {}
    for row in rows:
        try:
            start = memory_start(args)  # on CUDA: this row's model, state and warm-up steps
            model = build_model(row.model, row.step == "pretrain", args, row.ckpt)
            steps[row.name] = make_step(row.step, model, row.batch, args)
            for _ in range(max(args.warmup, 1)):
                steps[row.name]()
            sync(args)
            mems[row.name] = memory_peak_mb(start, args)
        except Exception as e:  # e.g. out of memory at a large batch: report it, keep going
            log(f"{row.name}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            row.vs = "failed"
    times = {name: [] for name in steps}
    order = list(steps)
    for k in range(args.repeats):
        for name in (order if k % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            steps[name]()
            sync(args)
            times[name].append(time.perf_counter() - start)
    steps.clear()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return times, mems


def run(args):
    cuda = args.device.startswith("cuda")
    rows = plan(args)
    peaks = [measure_peak(args)]
    fresh = None if cuda else FreshProcesses()
    flops = {}
    for row in rows:
        key = (row.step, row.model)
        if key not in flops:
            flops[key] = step_flops(row.step, build_model(row.model, row.step == "pretrain", args), args)
        row.flops = flops[key] * row.batch
    for group in ("train", "infer", "pretrain"):
        timed = [r for r in rows if r.group == group]
        if not timed:
            continue
        times, mems = interleaved_seconds(timed, args)
        for row in timed:
            if row.name not in times:
                continue
            row.reps, row.round_seconds = args.repeats, times[row.name]
            row.seconds = statistics.median(row.round_seconds)
            try:
                row.mem_mb = mems[row.name] if cuda else fresh.measure(row, args)[1]
            except Exception as e:
                log(f"{row.name}: memory failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log(f"{row.name:<28} batch {row.batch:>3}  {row.seconds * 1e3:10.1f} ms  "
                f"mem {row.mem_mb or float('nan'):8.0f} MB")
        peaks.append(measure_peak(args))  # the machine's best moment is its practical limit
    for row in (r for r in rows if r.group == "memory"):
        # One step: the rows are there for memory; their time shows the checkpointing cost.
        row.reps = 1
        try:
            row.seconds, row.mem_mb = measure_step(row, args, 1, 1) if cuda else fresh.measure(row, args)
        except Exception as e:
            log(f"{row.name}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            row.vs = "failed"
            continue
        finally:
            if cuda:
                torch.cuda.empty_cache()
        log(f"{row.name:<28} batch {row.batch:>3}  {row.seconds * 1e3:10.1f} ms  mem {row.mem_mb:8.0f} MB")
    if args.only is None or "loader" in args.only:
        rows += loader_rows(args, args.workers)
        for r in rows[-len(args.workers):]:
            log(f"{r.name:<28} {r.clips_per_s:.1f} clips/s")
    peaks.append(measure_peak(args))
    add_ratios(rows)
    return min(peaks, key=lambda p: p.seconds), rows


def measure_peak(args):
    seconds, flops, n, reps = matmul_peak(args)
    peak = Row("matmul", f"matmul {n}x{n} {args.dtype_name}", 1, reps=reps, seconds=seconds, flops=flops)
    log(f"matmul peak: {peak.gflops:.1f} GFLOP/s ({args.dtype_name}, {n}x{n})")
    return peak


def find(rows, name):
    return next((r for r in rows if r.name == name and r.seconds), None)


def speed_ratio(row, base):
    """Per-clip speed of ``row`` over ``base``: the median of the rounds' ratios when both were
    stepped in the same rounds (a slow spell then weighs on both sides of each ratio), else
    the ratio of the median step times."""
    a, b = row.round_seconds, base.round_seconds
    if a and b and len(a) == len(b):
        return statistics.median((tb / base.batch) / (ta / row.batch) for ta, tb in zip(a, b))
    return (base.seconds / base.batch) / (row.seconds / row.batch)


def add_ratios(rows):
    for r in rows:
        if not r.seconds or r.vs == "failed":
            continue
        if r.group in ("train", "infer", "pretrain"):
            base = find(rows, f"{r.group} {BASELINE}")
            if base:
                r.ratio, r.vs = speed_ratio(r, base), f"speed vs {BASELINE}"
        elif r.group == "memory" and r.ckpt:
            plain = find(rows, r.name[: -len(" ckpt")])
            if plain and plain.mem_mb:
                r.ratio, r.vs = r.mem_mb / plain.mem_mb, "memory vs no ckpt"
        elif r.group == "loader":
            model = find(rows, "train svfap_base")
            if model:
                r.ratio, r.vs = r.clips_per_s / model.clips_per_s, "clips/s vs train svfap_base"


def ratio_lines(rows):
    lines = []
    for group, what in (("train", "train step"), ("infer", "inference"), ("pretrain", "pre-training step")):
        base = find(rows, f"{group} {BASELINE}")
        for r in rows:
            if r.group == group and r.model != BASELINE and r.ratio and base:
                lines.append(f"{r.model} {what} is {r.ratio:.2f}x {'faster than' if r.ratio >= 1 else 'as fast as'} {BASELINE} "
                             f"(per clip, batch {r.batch})")
    for r in rows:
        if r.group == "memory" and r.ckpt and r.ratio:
            plain = find(rows, r.name[: -len(" ckpt")])
            lines.append(f"activation checkpointing cuts the peak memory of {r.step} {r.model} at batch {r.batch} by "
                         f"{1 - r.ratio:.0%} ({plain.mem_mb:.0f} -> {r.mem_mb:.0f} MB) at "
                         f"{r.seconds / plain.seconds:.2f}x its step time")
    model = find(rows, "train svfap_base")
    for r in rows:
        if r.group == "loader" and r.ratio:
            lines.append(f"{r.name}: {r.clips_per_s:.1f} clips/s = {r.ratio:.2f}x what the svfap_base train step "
                         f"consumes ({model.clips_per_s:.2f} clips/s): "
                         f"{'input-bound' if r.ratio < 1 else 'not input-bound'}")
    return lines


def targets(peak, rows, args):
    """(PASS/FAIL/n/a, description) for each target of the issue that applies to the device."""
    cuda = args.device.startswith("cuda")
    svfap, base = find(rows, "train svfap_base"), find(rows, f"train {BASELINE}")
    result = []

    def check(ok, text):
        result.append(("n/a" if ok is None else "PASS" if ok else "FAIL", text))

    if not cuda:
        ratio = svfap.ratio if svfap and base else None
        check(None if ratio is None else ratio >= TARGET_SPEEDUP,
              f"svfap_base train step >= {TARGET_SPEEDUP}x faster than {BASELINE}"
              + (f": {ratio:.2f}x" if ratio else ""))
    need = TARGET_GPU_PEAK_FRACTION if cuda else TARGET_CPU_PEAK_FRACTION
    frac = svfap.gflops / peak.gflops if svfap else None
    check(None if frac is None else frac >= need,
          f"svfap_base train step >= {need:.0%} of the {args.dtype_name} matmul peak"
          + (f": {frac:.0%}" if frac is not None else ""))
    ck = find(rows, "memory train svfap_base ckpt")
    cut = 1 - ck.ratio if ck and ck.ratio else None
    check(None if cut is None else cut >= TARGET_MEMORY_CUT,
          f"activation checkpointing cuts svfap_base peak training memory at batch {args.memory_batch} "
          f"by >= {TARGET_MEMORY_CUT:.0%}" + (f": {cut:.0%}" if cut is not None else ""))
    two = next((r for r in rows if r.group == "loader" and r.workers == 2), None)
    check(None if two is None or two.ratio is None else two.ratio >= 1,
          "loader with 2 workers >= the clips/s the svfap_base train step consumes"
          + (f": {two.ratio:.2f}x" if two and two.ratio else ""))
    return result


# --------------------------------------------------------------------------------------------
# output

COLUMNS = ["row", "batch", "reps", "ms/step", "clips/s", "GFLOP/s", "% peak", "peak MB", "ratio", "vs"]


def cells(row, peak):
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)
    frac = row.gflops / peak.gflops * 100 if row.gflops and peak.gflops else None
    return [row.name, str(row.batch), str(row.reps), num(row.seconds and row.seconds * 1e3, ".1f"),
            num(row.clips_per_s, ".2f"), num(row.gflops, ".1f"), num(frac, ".1f"),
            num(row.mem_mb, ".0f"), num(row.ratio, ".2f"), row.vs or "-"]


def text_table(peak, rows):
    body = [COLUMNS] + [cells(r, peak) for r in [peak] + rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    fmt = lambda line: "  ".join(c.ljust(w) if i in (0, 9) else c.rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt(body[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body[1:]])


def machine(args):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [f"{cpu}, {len(os.sched_getaffinity(0))} cores available, {args.threads} torch threads"]
    if args.device.startswith("cuda"):
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    parts.append(f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}")
    return "; ".join(parts)


def command_line(argv):
    """The command as typed, with paths inside the working directory made relative and other
    absolute paths (a scratch output folder) cut to their file name: no machine's paths."""
    cwd = os.getcwd()

    def clean(word):
        if not os.path.isabs(word):
            return word
        return os.path.relpath(word, cwd) if word.startswith(cwd + os.sep) else os.path.basename(word)
    return shlex.join(["python", "tools/benchmark.py", *map(clean, argv)])


def write_markdown(path, peak, rows, lines, checks, info):
    table = [cells(r, peak) for r in [peak] + rows]
    md = [
        "# Benchmarks",
        "",
        "Generated by `tools/benchmark.py`; re-measure, never edit by hand. Regenerate with:",
        "",
        f"    {info['command']}",
        "",
        f"- machine: {info['machine']}",
        f"- device: {info['device']}, precision: {info['dtype']}{', torch.compile' if info['compile'] else ''}",
        f"- date: {info['date']}; run took {info['wall']:.0f} s; load average at start / end: "
        f"{info['load'][0]:.2f} / {info['load'][1]:.2f}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i in (0, 9) else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    md += ["| " + " | ".join(line) + " |" for line in table]
    md += ["", "## Ratios", ""] + [f"- {line}" for line in lines]
    md += ["", "## Targets", ""] + [f"- {status}: {text}" for status, text in checks]
    md += ["", "## How to read it", "", NOTES]
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")


NOTES = """\
- ms/step: median over `reps` steps after warm-up, in one process, the rows of a group (train,
  infer, pretrain) stepped in turn (one round = one step of each row, the order reversed every
  other round) so that a drifting machine slows them alike; `memory` rows
  are a single step each (their time shows the recompute cost of checkpointing, with more noise).
- GFLOP/s: forward FLOPs from torch's flop counter (2 x MACs) x 3 for a training step (x 1 for
  inference), over the median step time; `% peak` divides by the `matmul` row, a large square
  matmul of the same device and dtype measured in the same run (before and after each group and
  at the end; the fastest is kept).
- peak MB: weights + gradients + optimizer state + activations. CPU: growth of the peak RSS of a
  fresh forked process running that row's step once (optimizer state allocated before it); CUDA:
  `torch.cuda.max_memory_allocated` over the memory allocated before the model was built.
- ratio: for step rows, per-clip speed relative to the `videomae_base` row of the same kind, the
  median over rounds of the two steps' ratio in that round; for
  `ckpt` rows, peak memory relative to the same step without activation checkpointing; for the
  loader, its clips/s relative to what the `train svfap_base` step consumes. The loader was
  measured alone: during training it shares the CPU with the model.
- loader: `VideoClsDataset` (train mode, RandAugment, random erasing) over a generated demo set
  (mp4 and frame folders), clips of the models' shape, `tools/benchmark_loader.py`'s `loader_rate`.
- CPU steps run, as the training entry points do on CPU, with glibc's heap trimming off
  (`engine.common.keep_freed_host_memory`), so that a step does not page-fault its activations in
  again every time.
- inputs are random clips already on the device: decoding and host-to-device copies are not in
  the step rows (the loader rows measure decoding and augmentation).
- CUDA (`--device cuda`, bf16 autocast by default, batch 32) restricts attention to the flash /
  efficient / cuDNN SDPA kernels, so a fall-back to the math kernel fails instead of passing
  silently. `--compile` rows include no compile time (it falls in the warm-up steps)."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"],
                    help="autocast dtype; auto = bf16 on CUDA, none (fp32) on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (not the flop count)")
    ap.add_argument("--batch_size", type=int, help="step rows (default 2 on CPU, 32 on CUDA)")
    ap.add_argument("--memory_batch", type=int, default=8, help="checkpointing memory rows")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: the cores available)")
    ap.add_argument("--workers", type=int, nargs="+", help="loader worker counts (default 1..cores)")
    ap.add_argument("--loader_clips", type=int, default=96, help="clips each loader configuration reads")
    ap.add_argument("--loader_batch", type=int, default=8)
    ap.add_argument("--loader_size", type=int, default=224, help="side of the generated source frames")
    ap.add_argument("--loader_frames", type=int, default=64, help="frames per generated video")
    ap.add_argument("--loader_stride", type=int, default=4, help="sampling rate of the clips")
    ap.add_argument("--only", nargs="+", help=f"rows to run: groups ({', '.join(GROUPS)}) and/or model names "
                    f"({', '.join(MODELS)}); the matmul peak always runs")
    ap.add_argument("--quick", action="store_true", help="tiny models and loader, few repeats (tests)")
    ap.add_argument("--markdown", help="also write the table in BENCHMARKS.md form to this file")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    if args.only:
        unknown = set(args.only) - set(GROUPS) - set(MODELS)
        if unknown:
            ap.error(f"--only: unknown {sorted(unknown)}")
    cores = len(os.sched_getaffinity(0))
    args.threads = args.threads or cores
    args.workers = args.workers or list(range(1, cores + 1))
    if args.quick:
        args.batch_size = args.batch_size or 1
        args.memory_batch, args.warmup, args.repeats = 2, 1, 2
        args.loader_clips, args.loader_batch, args.loader_size = 8, 2, 32
        args.loader_frames, args.loader_stride, args.workers = 16, 2, args.workers[:2]
    args.batch_size = args.batch_size or (32 if cuda else 2)
    amp = args.amp if args.amp != "auto" else ("bf16" if cuda else "none")
    args.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    args.dtype_name = {"none": "fp32"}.get(amp, amp)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.device.startswith("cuda"):
        keep_freed_host_memory()  # as run_finetune / run_pretrain do on CPU
    load_start, wall = os.getloadavg()[0], time.perf_counter()
    log(f"{machine(args)}\ndevice {args.device}, {args.dtype_name}{', compiled' if args.compile else ''}"
        f"{', QUICK (tiny models: numbers mean nothing)' if args.quick else ''}")
    peak, rows = run(args)
    lines, checks = ratio_lines(rows), targets(peak, rows, args)
    print()
    print(text_table(peak, rows))
    print()
    for line in lines:
        print(line)
    for status, text in checks:
        print(f"{status}: {text}")
    if args.markdown:
        info = dict(command=command_line(argv), machine=machine(args), device=args.device, dtype=args.dtype_name,
                    compile=args.compile, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    wall=time.perf_counter() - wall, load=(load_start, os.getloadavg()[0]))
        write_markdown(args.markdown, peak, rows, lines, checks, info)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

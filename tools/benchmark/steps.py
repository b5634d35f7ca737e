"""Side-by-side performance benchmark: SVFAP against the VideoMAE baseline, in one run.

    python -m tools.benchmark [--device cuda] [--amp bf16|fp16] [--vs_fp32] [--compile auto|True|False]
                              [--markdown docs/benchmarks/cpu.md]

Rows, all measured in this run on this machine:
  matmul    a large square matmul of the device and dtype: the practical peak
  train     fine-tuning step of svfap_base, svfap_small and videomae_base at --batch_size, as
            run_finetune runs it (uint8 clips normalised and erased on the device, mixup / cutmix,
            forward, loss, backward, AdamW with layer decay); with --vs_fp32 also svfap_base in
            fp32, against the run's precision
  infer     normalisation and forward in eval mode, no grad
  pretrain  masked-autoencoder step as run_pretrain runs it (uint8 clips and tube masks at ratio
            0.9, targets and normalisation on the device, forward with the static masked-token
            count, loss, backward, AdamW)
  memory    the training steps again at --memory_batch, without and with activation checkpointing

docs/benchmarks.md says how each column is measured. --compile (auto: on CUDA) compiles the models
as the entry points do, each as one graph (a graph break fails the row). --quick shrinks every
model so that the whole run takes seconds (for tests; its numbers mean nothing).
"""
import argparse
import datetime
import os
import statistics
import sys
import time

import torch

from engine.cli import HelpFormatter
from engine.compile import COMPILE_MODES, compile_enabled
from engine.options import auto_or_bool
from engine.runtime import PRECISIONS, keep_freed_host_memory, precision

from .memory import FreshProcesses, measure_step, memory_peak_mb, memory_start
from .report import Row, add_ratios, command_line, log, machine, ratio_lines, text_table, write_markdown
from .workloads import MODELS, PRETRAIN_MODELS, build_model, make_step, matmul_peak, step_flops, sync, with_precision

GROUPS = ["train", "infer", "pretrain", "memory"]


def plan(args):
    """The rows to measure, in order, filtered by --only (groups or model names)."""
    rows = []
    for group in ("train", "infer", "pretrain"):
        names = PRETRAIN_MODELS if group == "pretrain" else list(MODELS)
        rows += [Row(group, f"{group} {m}", args.batch_size, model=m, step=group) for m in names]
    if args.vs_fp32 and args.amp_dtype is not None:  # the run's precision against fp32, stepped in turn
        rows.insert([r.group for r in rows].index("infer"),
                    Row("train", "train svfap_base fp32", args.batch_size, model="svfap_base", step="train", amp="none"))
    for step, names in (("train", list(MODELS)), ("pretrain", PRETRAIN_MODELS)):
        rows += [Row("memory", f"memory {step} {m}{' ckpt' if c else ''}", args.memory_batch, model=m, step=step,
                     ckpt=bool(c)) for m in names for c in (0, 1)]
    if args.only:
        rows = [r for r in rows if r.group in args.only or r.model in args.only]
    return rows


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
            steps[row.name] = make_step(row.step, model, row.batch, with_precision(args, row.amp))
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
    peaks.append(measure_peak(args))
    add_ratios(rows)
    return min(peaks, key=lambda p: p.seconds), rows


def measure_peak(args):
    seconds, flops, n, reps = matmul_peak(args)
    peak = Row("matmul", f"matmul {n}x{n} {args.dtype_name}", 1, reps=reps, seconds=seconds, flops=flops)
    log(f"matmul peak: {peak.gflops:.1f} GFLOP/s ({args.dtype_name}, {n}x{n})")
    return peak


def get_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--amp", default="auto", choices=["auto", *PRECISIONS],
                    help="autocast dtype; auto = bf16 on CUDA and on CPUs with native bf16, else none (fp32)")
    ap.add_argument("--vs_fp32", action="store_true",
                    help="also step svfap_base in fp32 with the train rows: the speed-up of --amp over fp32")
    ap.add_argument("--compile", default="auto", type=auto_or_bool, nargs="?", const=True, metavar="{auto,True,False}",
                    help="torch.compile the models as the entry points do (auto: on CUDA); not the flop count")
    ap.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                    help="torch.compile mode when compiling (reduce-overhead: CUDA graphs)")
    ap.add_argument("--batch_size", type=int, help="step rows (default 2 on CPU, 32 on CUDA)")
    ap.add_argument("--memory_batch", type=int, default=8, help="checkpointing memory rows")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per row first (compilation falls here)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per row (the median is reported)")
    ap.add_argument("--threads", type=int, help="torch threads (default: the cores available)")
    ap.add_argument("--only", nargs="+", help=f"rows to run: groups ({', '.join(GROUPS)}) and/or model names "
                    f"({', '.join(MODELS)}); the matmul peak always runs")
    ap.add_argument("--quick", action="store_true", help="tiny models, few repeats (tests)")
    ap.add_argument("--markdown", help="also write the table as markdown to this file (docs/benchmarks/*.md)")
    return ap


def parse_args(argv=None):
    ap = get_parser()
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
    args.compile = compile_enabled(args.compile, args.device)
    if args.quick:
        args.batch_size = args.batch_size or 2
        args.memory_batch, args.warmup, args.repeats = 2, 1, 2
    args.batch_size = args.batch_size or (32 if cuda else 2)
    amp = precision(args.amp, args.device)
    args.amp_dtype = PRECISIONS[amp]
    args.dtype_name = {"none": "fp32"}.get(amp, amp)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.device.startswith("cuda"):
        keep_freed_host_memory()  # as run_finetune / run_pretrain do on CPU
    load_start, wall = os.getloadavg()[0], time.perf_counter()
    log(f"{machine(args)}\ndevice {args.device}, {args.dtype_name}{f', compiled ({args.compile_mode})' if args.compile else ''}"
        f"{', QUICK (tiny models: numbers mean nothing)' if args.quick else ''}")
    peak, rows = run(args)
    lines = ratio_lines(rows)
    print()
    print(text_table(peak, rows))
    print()
    for line in lines:
        print(line)
    if args.markdown:
        info = dict(command=command_line(argv), machine=machine(args), device=args.device, dtype=args.dtype_name,
                    compile=args.compile and args.compile_mode, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    wall=time.perf_counter() - wall, load=(load_start, os.getloadavg()[0]))
        write_markdown(args.markdown, peak, rows, lines, info)
        print(f"wrote {args.markdown}")

"""The GPU check: what the training steps of SVFAP-B and ViT-B cost on the GPU at hand, eager,
compiled and with CUDA graphs, and whether the loader keeps the GPU busy; one command that keeps to a
time budget (docs/benchmarks.md says what each column is):

    python -m tools.benchmark.gpu_check [--budget_s 450] [--markdown docs/benchmarks/<gpu>.md]

Rows run in order of importance, each one's cost estimated from the rows before it: what would not
fit is skipped with a line saying so, a row that fails (out of memory) says so and the check goes
on. On CPU (--device cpu) the rows count ATen ops instead of kernels; --quick is for tests.
"""
import argparse
import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from datasets.annotations import read_annotations
from datasets.demo import generate
from datasets.pretrain import PretrainDataset
from engine.cli import HelpFormatter
from engine.compile import compile_seconds, use_cache_dir
from engine.loader import build_loader
from engine.runtime import PRECISIONS, keep_freed_host_memory, precision

from .report import log, machine
from .workloads import BASELINE, build_model, clip_shape, make_step, matmul_peak, step_flops, sync

MODES = {"eager": None, "compiled": "default", "cudagraphs": "reduce-overhead"}
TASKS = {"pretrain": "pretrain", "finetune": "train"}  # task -> workloads' step group
MODELS = ["svfap_base", BASELINE]
COMPILE_GUESS_S = {"svfap_base": 150.0, BASELINE: 90.0}  # before any compile was measured (H100, cold cache)


@dataclass
class Row:
    mode: str
    task: str
    model: str
    batch: int
    seconds: float = None  # per step
    flops: float = None  # per step
    kernels: float = None  # per step (ATen ops on CPU)
    idle: float = None  # share of the step the GPU ran no kernel
    compile_s: float = None
    sync: str = ""  # "none", or the first host sync's error
    note: str = ""  # skipped / failed, and why

    @property
    def name(self):
        return f"{self.mode} {self.task} {self.model} @{self.batch}"


def profile_steps(step, count, cuda):
    """(kernels or, on CPU, ATen ops per step, share of the profiled span the GPU ran no kernel)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(count):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if not cuda:
        return sum(e.name.startswith("aten::") for e in events) / count, None
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    start = min(e.time_range.start for e in events)
    end = max(e.time_range.end for e in events)
    busy, reach = 0.0, start
    for a, b in kernels:  # the union of the kernels' intervals
        if b > reach:
            busy += b - max(a, reach)
            reach = b
    return len(kernels) / count, 1 - busy / max(end - start, 1e-9)


def sync_check(step, cuda):
    """'none', or the error of the first host synchronisation inside one step."""
    if not cuda:
        return "-"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return "none"
    except RuntimeError as e:
        return f"SYNC: {str(e).splitlines()[0][:80]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def measure(row, args):
    """Fill ``row``: the step compiled (first call), warmed up, synced-checked, timed, profiled."""
    cuda = args.device.startswith("cuda")
    torch._dynamo.reset()  # a fresh compile per row (static shapes); the graphs come from the cache if seen
    run_args = Namespace(**{**vars(args), "compile": MODES[row.mode] is not None,
                            "compile_mode": MODES[row.mode] or "default"})
    model = build_model(row.model, row.task == "pretrain", run_args)
    row.flops = step_flops(TASKS[row.task], model, run_args) * row.batch
    step = make_step(TASKS[row.task], model, row.batch, run_args)
    before = compile_seconds()
    step()
    sync(args)
    row.compile_s = compile_seconds() - before if run_args.compile else None
    for _ in range(args.warmup):
        step()
    row.sync = sync_check(step, cuda)
    sync(args)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(args)
    row.seconds = (time.perf_counter() - start) / args.steps
    row.kernels, row.idle = profile_steps(step, args.profile_steps, cuda)


def step_estimate(row, done):
    """Seconds a step of ``row`` would take, from the fastest measured row of its model and task."""
    same = [r for r in done if (r.task, r.model) == (row.task, row.model) and r.seconds]
    return min((r.seconds * row.batch / r.batch for r in same), default=1.0)


def estimate(row, done, args):
    """Seconds ``row`` would take, from the rows measured before it."""
    total = step_estimate(row, done) * (1 + args.warmup + 1 + args.steps + args.profile_steps) + 5  # + the model
    if row.mode != "eager":
        compiles = [r.compile_s for r in done if r.model == row.model and r.compile_s]
        total += max(compiles) if compiles else (5.0 if args.quick else COMPILE_GUESS_S[row.model])
    return total


def plan(args):
    rows = [Row("eager", t, m, b) for t in args.tasks for b in args.batch_sizes for m in args.models]
    for mode in args.modes:
        if mode != "eager":
            rows += [Row(mode, t, m, b) for b in args.batch_sizes for t in args.tasks for m in args.models]
    return [r for r in rows if r.mode in args.modes]


def free(args):
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_rows(args, deadline):
    done = []
    e2e = []
    for row in plan(args):
        if args.e2e_workers and not e2e and row.mode == "cudagraphs":
            e2e = end_to_end(args, deadline, done)
            for line in e2e:
                log(line)
        left = deadline - time.perf_counter()
        need = estimate(row, done, args)
        if need > left:
            row.note = f"skipped: ~{need:.0f} s needed, {max(left, 0):.0f} s of the budget left"
        else:
            try:
                measure(row, args)
            except torch.OutOfMemoryError:
                row.note = "out of memory"
            except Exception as e:  # report it, keep going: the other rows still mean something
                row.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
            free(args)
        log(row_line(row))
        done.append(row)
    if args.e2e_workers and not e2e:
        e2e = end_to_end(args, deadline, done)
        for line in e2e:
            log(line)
    return done, e2e


def clip_list(tmp, args, clips):
    """An annotation file listing ``clips`` clips: --e2e_data's, or a generated set shaped like
    VoxCeleb2's face tracks (224 px, 200 frames, a keyframe a second), cycled."""
    if args.e2e_data:
        samples = read_annotations(args.e2e_data, args.e2e_root)
    else:
        size, frames, gop = (48, 24, 8) if args.quick else (224, 200, 25)
        generate(tmp, size=size, frames=frames, train_per_class=2, eval_per_class=0, gop=gop)
        samples = read_annotations(os.path.join(tmp, "train.csv"))
    path = os.path.join(tmp, "e2e.csv")
    with open(path, "w") as f:
        f.writelines(f"{samples[i % len(samples)].path} 0\n" for i in range(clips))
    return path


def endless(loader):
    """Batches of a persistent-worker loader over as many epochs as asked for."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def seconds_per_step(step, batches, count, args):
    sync(args)
    start = time.perf_counter()
    for _ in range(count):
        step(next(batches))
    sync(args)
    return (time.perf_counter() - start) / count


def end_to_end(args, deadline, done):
    """The pre-training step of svfap_base (compiled when the compiled rows ran: the training default
    on CUDA) fed by the training loader with each --e2e_workers count, against the same step fed one
    batch on the device, in alternating rounds; lines ``(workers, clips/s, fed / model-only)``."""
    compiled_ran = any(r.mode == "compiled" and r.seconds for r in done)
    row = Row("compiled" if compiled_ran else "eager", "pretrain", "svfap_base", args.batch_sizes[0])
    steps = len(args.e2e_workers) * (2 * args.repeats * args.e2e_steps + 5)
    need = estimate(row, done, args) + steps * step_estimate(row, done) + (10 if args.quick else 60)  # + the clips
    if need > deadline - time.perf_counter():
        return [f"e2e: skipped: ~{need:.0f} s needed, {max(deadline - time.perf_counter(), 0):.0f} s of the "
                f"budget left"]
    run_args = Namespace(**{**vars(args), "compile": compiled_ran, "compile_mode": "default"})
    torch._dynamo.reset()
    lines = []
    try:
        model = build_model(row.model, True, run_args)
        frames, size, _ = clip_shape(model)
        step = make_step("pretrain", model, row.batch, run_args, data=None)
        with tempfile.TemporaryDirectory() as tmp:
            dataset = PretrainDataset(clip_list(tmp, args, max(args.e2e_steps * row.batch * 4, 64)), num_frames=frames,
                                      sampling_rate=2 if args.quick else 4, input_size=size, face_crop=True)
            for workers in args.e2e_workers:
                loader = build_loader(dataset, Namespace(num_workers=workers, batch_size=row.batch, pin_mem=True,
                                                         device=args.device, seed=0), train=True)
                batches = endless(loader)
                fixed = [t.to(args.device) for t in next(batches)]
                for _ in range(2):  # compiling, the workers' start, the allocator
                    step(fixed)
                    step(next(batches))
                alone, fed = [], []
                for _ in range(args.repeats):
                    alone.append(seconds_per_step(step, itertools.repeat(fixed), args.e2e_steps, args))
                    fed.append(seconds_per_step(step, batches, args.e2e_steps, args))
                ratio = statistics.median(a / b for a, b in zip(alone, fed))
                lines.append(f"e2e {row.mode} pretrain svfap_base @{row.batch}, {workers} loader worker"
                             f"{'s' if workers > 1 else ''}: {row.batch / statistics.median(fed):.1f} clips/s = "
                             f"{ratio:.0%} of the same step fed one batch on the device "
                             f"({row.batch / statistics.median(alone):.1f} clips/s)")
                del batches, loader
    except Exception as e:  # report it: the rows before still mean something
        lines.append(f"e2e: failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}")
    free(args)
    return lines


def row_line(r):
    if r.note:
        return f"{r.name}: {r.note}"
    return (f"{r.name}: {r.seconds * 1e3:.1f} ms/step, {r.batch / r.seconds:.1f} clips/s, "
            f"{r.kernels:.0f} {'kernels' if r.idle is not None else 'ATen ops'}/step"
            + (f", GPU idle {r.idle:.0%}" if r.idle is not None else "")
            + (f", compiled in {r.compile_s:.1f} s" if r.compile_s is not None else "") + f", host sync: {r.sync}")


COLUMNS = ["mode", "task", "model", "batch", "ms/step", "clips/s", "vs ViT-B/clip", "% peak", "kernels/step",
           "GPU idle", "compile s", "host sync"]


def table(rows, peak_flops, cuda):
    """Lines of the result table (markdown)."""
    def find(r, model):
        return next((o for o in rows if (o.mode, o.task, o.batch, o.model) == (r.mode, r.task, r.batch, model)
                     and o.seconds), None)
    header = COLUMNS if cuda else [c.replace("kernels", "ATen ops") for c in COLUMNS]
    rule = "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for r in rows:
        if not r.seconds:
            lines.append(f"| {r.mode} | {r.task} | {r.model} | {r.batch} | {r.note} |" + " |" * (len(COLUMNS) - 5))
            continue
        base = find(r, BASELINE)
        ratio = f"{base.seconds / r.seconds:.2f}" if base else "-"
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append("| " + " | ".join([
            r.mode, r.task, r.model, str(r.batch), f"{r.seconds * 1e3:.1f}", f"{r.batch / r.seconds:.1f}", ratio,
            f"{r.flops / r.seconds / peak_flops * 100:.1f}", f"{r.kernels:.0f}", fmt(r.idle and r.idle * 100, ".0f"),
            fmt(r.compile_s, ".0f"), r.sync]) + " |")
    return lines


def get_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    ap.add_argument("--amp", default="auto", choices=["auto", *PRECISIONS],
                    help="autocast dtype; auto = bf16 on CUDA and on CPUs with native bf16, else none (fp32)")
    ap.add_argument("--budget_s", type=float, default=450.0, help="seconds the check may take (rows that would not "
                                                                   "fit are skipped)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="step modes")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="training steps")
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS, help="models")
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 256], help="clips per step")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (compiling) one")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row")
    ap.add_argument("--profile_steps", type=int, default=2, help="profiled steps per row")
    ap.add_argument("--e2e_workers", type=int, nargs="*", default=None,
                    help="loader workers of the end-to-end rows (default: the cores available but one; none: skip)")
    ap.add_argument("--e2e_steps", type=int, default=10, help="steps per round of the end-to-end rows")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the end-to-end rows")
    ap.add_argument("--e2e_data", help="annotation file of pre-training clips for the end-to-end rows "
                                       "(default: generated VoxCeleb2-shaped clips)")
    ap.add_argument("--e2e_root", default="", help="folder the --e2e_data paths are relative to")
    ap.add_argument("--compile_cache", default=os.path.join("output", "gpu_check", "compile_cache"),
                    help="inductor's cache (a second run loads the graphs instead of compiling them)")
    ap.add_argument("--quick", action="store_true", help="tiny models and clips (tests; the numbers mean nothing)")
    ap.add_argument("--markdown", help="also write the table to this markdown file")
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = get_parser().parse_args(argv)
    wall = time.perf_counter()
    deadline = wall + args.budget_s
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    args.amp_dtype = PRECISIONS[precision(args.amp, args.device)]
    dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[args.amp_dtype]
    if args.e2e_workers is None:
        args.e2e_workers = [max(1, len(os.sched_getaffinity(0)) - 1)]
    args.threads = torch.get_num_threads()
    if not cuda:
        keep_freed_host_memory()
    use_cache_dir(os.path.abspath(args.compile_cache))
    # Every row is a fresh model of one of two classes, compiled for its own batch: more graphs per
    # forward than dynamo keeps by default.
    torch._dynamo.config.cache_size_limit = 64

    log(f"{machine(args)}; {args.device}, {dtype}; budget {args.budget_s:.0f} s; inductor cache {args.compile_cache}")
    seconds, flops, n, _ = matmul_peak(args)
    peak = flops / seconds
    log(f"matmul peak: {peak / 1e12:.1f} TFLOP/s ({dtype}, {n}x{n})")
    rows, e2e = run_rows(args, deadline)
    lines = table(rows, peak, cuda)
    skipped = sum(bool(r.note) for r in rows)
    summary = (f"{len(rows) - skipped} of {len(rows)} rows measured in {time.perf_counter() - wall:.0f} s "
               f"(budget {args.budget_s:.0f} s); matmul peak {peak / 1e12:.1f} TFLOP/s {dtype}")
    print("\n" + "\n".join(lines) + "\n\n" + summary)
    if args.markdown:
        e2e_lines = [f"- {line}" for line in e2e]
        text = ["# GPU check", "", "Generated by `python -m tools.benchmark.gpu_check " + " ".join(argv) + "`; "
                "docs/benchmarks.md says how to read it.", "", f"- machine: {machine(args)}", f"- {summary}", "",
                *lines, "", "## End to end", "", *(e2e_lines or ["- not measured"])]
        with open(args.markdown, "w") as f:
            f.write("\n".join(text) + "\n")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

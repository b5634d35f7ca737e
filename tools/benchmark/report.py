"""The step benchmark's rows, ratios, and their text and markdown tables (docs/benchmarks.md says
how to read them)."""
import os
import platform
import shlex
import statistics
import time
from dataclasses import dataclass

import timm
import torch

from .workloads import BASELINE


_START = time.perf_counter()


def log(msg):
    """A progress line, stamped with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {msg}", flush=True)


@dataclass
class Row:
    group: str  # matmul, train, infer, pretrain or memory
    name: str
    batch: int
    model: str = ""
    step: str = ""  # what a step row runs: train, infer or pretrain
    ckpt: bool = False
    reps: int = 0
    seconds: float | None = None  # per step
    flops: float | None = None  # per step
    mem_mb: float | None = None
    ratio: float | None = None
    vs: str = ""
    round_seconds: list | None = None  # step rows: one time per round of the interleaved steps
    amp: str = ""  # a step row's precision when not the run's (--vs_fp32 rows: "none")

    @property
    def clips_per_s(self):
        return self.batch / self.seconds if self.seconds else None

    @property
    def gflops(self):
        return self.flops / self.seconds / 1e9 if self.flops and self.seconds else None


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
        if r.amp:
            main = find(rows, f"{r.group} {r.model}")
            if main:
                r.ratio, r.vs = speed_ratio(r, main), f"speed vs {main.name}"
        elif r.group in ("train", "infer", "pretrain"):
            base = find(rows, f"{r.group} {BASELINE}")
            if base:
                r.ratio, r.vs = speed_ratio(r, base), f"speed vs {BASELINE}"
        elif r.group == "memory" and r.ckpt:
            plain = find(rows, r.name[: -len(" ckpt")])
            if plain and plain.mem_mb:
                r.ratio, r.vs = r.mem_mb / plain.mem_mb, "memory vs no ckpt"


def ratio_lines(rows):
    lines = []
    for group, what in (("train", "train step"), ("infer", "inference"), ("pretrain", "pre-training step")):
        base = find(rows, f"{group} {BASELINE}")
        for r in rows:
            if r.group == group and r.model != BASELINE and r.ratio and base and not r.amp:
                lines.append(f"{r.model} {what} is {r.ratio:.2f}x {'faster than' if r.ratio >= 1 else 'as fast as'} {BASELINE} "
                             f"(per clip, batch {r.batch})")
    for r in rows:
        if r.amp and r.ratio:
            lines.append(f"{r.model} {r.group} step at the run's precision is {1 / r.ratio:.2f}x as fast as in "
                         f"{'fp32' if r.amp == 'none' else r.amp} (per clip, batch {r.batch})")
    for r in rows:
        if r.group == "memory" and r.ckpt and r.ratio:
            plain = find(rows, r.name[: -len(" ckpt")])
            lines.append(f"activation checkpointing cuts the peak memory of {r.step} {r.model} at batch {r.batch} by "
                         f"{1 - r.ratio:.0%} ({plain.mem_mb:.0f} -> {r.mem_mb:.0f} MB) at "
                         f"{r.seconds / plain.seconds:.2f}x its step time")
    return lines


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
    return shlex.join(["python", "-m", "tools.benchmark", *map(clean, argv)])


def write_markdown(path, peak, rows, lines, info):
    table = [cells(r, peak) for r in [peak] + rows]
    md = [
        "# Benchmarks",
        "",
        "Generated by `python -m tools.benchmark`; re-measure, never edit by hand (docs/benchmarks.md says how "
        "to read it). Regenerate with:",
        "",
        f"    {info['command']}",
        "",
        f"- machine: {info['machine']}",
        f"- device: {info['device']}, precision: {info['dtype']}" + (f", torch.compile ({info['compile']})" if info["compile"] else ""),
        f"- date: {info['date']}; run took {info['wall']:.0f} s; load average at start / end: "
        f"{info['load'][0]:.2f} / {info['load'][1]:.2f}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i in (0, 9) else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    md += ["| " + " | ".join(line) + " |" for line in table]
    md += ["", "## Ratios", ""] + [f"- {line}" for line in lines]
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")

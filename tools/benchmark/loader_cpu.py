"""CPU milliseconds per delivered clip of the training loaders, with one worker: what sets how many
GPUs a node's cores can feed.

Each loader is measured side by side with the old host-float path (`HostFloat`: the worker
normalises, erases and collates float32 clips, as before the uint8 path) in one run. "worker" is
the CPU time (user + system, from /proc) of the loader's worker process over whole epochs, divided
by the clips delivered; it includes decoding, augmentation and collation into shared memory.
"main" is the CPU time of this process over the same epochs: receiving the batches and the work
the uint8 path moves to the device (normalisation, erasing, reconstruction targets), which costs
CPU time here only when the device is the CPU. Rounds take the loaders in turn, in alternating
order, so that a slow spell of a shared machine weighs on all of them; a ratio is the median of
the rounds' ratios of the host-float worker time over this loader's.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from engine.device_batch import ModelInput, to_device
from engine.pretrain import reconstruction_target

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far (proc(5), fields 14-15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS


class HostFloat(Dataset):
    """Today's division of work over a uint8 dataset: each item's clips normalised (and erased with
    probability `reprob`) in the worker, so that workers collate and share float32 clips."""

    def __init__(self, dataset, reprob=0.0):
        self.dataset, self.prepare = dataset, ModelInput("cpu", reprob)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return (self.prepare(item[0]), *item[1:])


def device_work(device, kind, reprob=0.0, patch=16, tubelet=2):
    """What the training step does with a batch before the model, on `device`: the copy, then the
    uint8 path's normalisation and erasing (host-float clips arrive ready), and for pre-training
    the reconstruction targets."""
    prepare = ModelInput(device, reprob)

    def work(batch):
        clips = to_device(batch[0], device)
        if clips.dtype == torch.uint8:
            prepare(clips)
        if kind == "pretrain":
            reconstruction_target(clips, batch[1].flatten(1).bool(), patch, tubelet)
    return work


@dataclass
class Config:
    label: str
    dataset: Dataset
    work: object  # batch -> None, the main process's share
    baseline: str | None = None  # label of the host-float config this one is compared with
    batch_items: int = 8  # dataset items per batch (each holds num_samples clips)
    collate: object = None
    worker_ms: list = field(default_factory=list)
    main_ms: list = field(default_factory=list)


def make_loader(cfg: Config, pin: bool):
    return DataLoader(cfg.dataset, batch_size=cfg.batch_items, shuffle=True, num_workers=1, persistent_workers=True,
                      collate_fn=cfg.collate, pin_memory=pin, timeout=300)


def worker_pids(loader) -> list[int]:
    # A started persistent DataLoader keeps its worker processes in its iterator; no public API lists them.
    return [w.pid for w in loader._iterator._workers]


def timed_round(loader, work, min_clips, min_seconds, sync):
    """(worker ms, main ms) per clip over whole epochs, at least `min_clips` clips and `min_seconds`."""
    pids = worker_pids(loader)
    worker0, main0, wall0 = sum(map(process_cpu_seconds, pids)), time.process_time(), time.perf_counter()
    clips = 0
    while clips < min_clips or time.perf_counter() - wall0 < min_seconds:
        for batch in loader:
            work(batch)
            clips += len(batch[0])
        sync()
    worker = sum(map(process_cpu_seconds, pids)) - worker0
    return worker / clips * 1e3, (time.process_time() - main0) / clips * 1e3


def measure(configs, rounds, min_clips, min_seconds, device):
    """Fill each config's per-round worker and main ms/clip; the loaders are taken in turn, the order
    reversed every other round."""
    cuda = str(device).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loaders = [make_loader(c, pin=cuda) for c in configs]
    for cfg, loader in zip(configs, loaders):  # start the worker, warm its caches: not timed
        for batch in loader:
            cfg.work(batch)
    for r in range(rounds):
        order = list(zip(configs, loaders))
        for cfg, loader in (order if r % 2 == 0 else order[::-1]):
            worker, main = timed_round(loader, cfg.work, min_clips, min_seconds, sync)
            cfg.worker_ms.append(worker)
            cfg.main_ms.append(main)
    del loaders


def report(configs):
    """Text lines: median [min-max] worker ms, median main ms, and how many times less worker CPU
    a clip takes than with its host-float baseline (the median [min-max] of the rounds' ratios)."""
    by_label = {c.label: c for c in configs}
    width = max(len(c.label) for c in configs)
    lines = []
    for c in configs:
        line = (f"  {c.label:<{width}}  worker {statistics.median(c.worker_ms):6.1f} ms/clip "
                f"[{min(c.worker_ms):.1f}-{max(c.worker_ms):.1f}]  main {statistics.median(c.main_ms):5.1f} ms/clip")
        if c.baseline:
            ratios = [b / w for b, w in zip(by_label[c.baseline].worker_ms, c.worker_ms)]
            line += f"  {statistics.median(ratios):.2f}x less [{min(ratios):.2f}-{max(ratios):.2f}]"
        lines.append(line)
    return lines

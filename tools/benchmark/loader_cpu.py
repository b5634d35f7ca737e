"""CPU milliseconds per delivered clip of the training loaders, with one worker: what sets how many
GPUs a node's cores can feed.

"worker" is the CPU time (user + system, from /proc) of the loader's worker process over whole
epochs, divided by the clips delivered; it includes decoding, augmentation and collation into
shared memory. "main" is the CPU time of this process over the same epochs: receiving the batches
and the batch work the training step does on the device (normalisation, erasing, reconstruction
targets), which costs CPU time here only when the device is the CPU. Rounds take the loaders in
turn, in alternating order, so that a slow spell of a shared machine weighs on all of them.
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


def device_work(device, kind, reprob=0.0, patch=16, tubelet=2):
    """What the training step does with a batch before the model, on `device`: the copy,
    normalisation and erasing, and for pre-training the reconstruction targets."""
    prepare = ModelInput(device, reprob)

    def work(batch):
        clips = to_device(batch[0], device)
        prepare(clips)
        if kind == "pretrain":
            reconstruction_target(clips, batch[1].flatten(1).bool(), patch, tubelet)
    return work


@dataclass
class Config:
    label: str
    dataset: Dataset
    work: object  # batch -> None, the main process's share
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
    """Text lines: median [min-max] worker ms and median main ms per clip. (A worker's CPU time is
    read in clock ticks, so a short round can read 0.)"""
    width = max(len(c.label) for c in configs)
    return [f"  {c.label:<{width}}  worker {statistics.median(c.worker_ms):6.1f} ms/clip "
            f"[{min(c.worker_ms):.1f}-{max(c.worker_ms):.1f}]  main {statistics.median(c.main_ms):5.1f} ms/clip"
            for c in configs]

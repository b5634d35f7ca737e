"""Peak memory of one step: on CUDA the allocator's peak; on CPU the growth of the peak RSS of a
fresh process forked for the measurement (a process's peak RSS only grows)."""
import gc
import multiprocessing
import os
import resource
from argparse import Namespace
from queue import Empty

import torch

from .report import Row
from .workloads import build_model, make_step, median_seconds, with_precision


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
    step = make_step(row.step, model, row.batch, with_precision(args, row.amp))
    seconds = median_seconds(step, warmup, repeats, args)
    mem = memory_peak_mb(start, args)
    del step, model
    return seconds, mem


def _child(row, args, queue):
    torch.set_num_threads(args.threads)
    try:
        # The first step of any model maps kernels and libraries into memory (~100 MB); a tiny
        # step first puts that into the baseline instead of into the row's peak.
        measure_step(Row(row.group, "warm-up", 2, model=row.model, step=row.step, ckpt=row.ckpt),
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

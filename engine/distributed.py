"""torch.distributed set-up for torchrun, SLURM, or a single process without a launcher."""
import builtins
import datetime
import os

import torch
import torch.distributed as dist

# A CPU (gloo) group for small control messages (stop requests, decisions rank 0 broadcasts):
# with NCCL these would otherwise need a GPU tensor and a host sync every step.
_CONTROL = None


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


def barrier(control=False):
    """All ranks wait for each other (a no-op in one process); ``control``: on the CPU group."""
    if is_dist():
        dist.barrier(group=_CONTROL if control else None)


def _silence_non_main(is_master):
    builtin_print = builtins.print

    def print_(*args, force=False, **kwargs):
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print_


def init_distributed_mode(device, timeout_minutes=30):
    """Join the process group torchrun or SLURM describe in the environment (a single process
    without either). Returns ``{"rank", "world_size", "gpu", "distributed", "device"}``."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        rank, world_size = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        gpu = int(os.environ.get("SLURM_LOCALID", 0))
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
        os.environ["LOCAL_RANK"] = str(gpu)
    else:
        return {"rank": 0, "world_size": 1, "gpu": 0, "distributed": False, "device": device}
    use_cuda = str(device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    info = {"rank": rank, "world_size": world_size, "gpu": gpu, "distributed": world_size > 1, "device": device}
    if world_size == 1:
        return info
    global _CONTROL
    backend = "nccl" if use_cuda else "gloo"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank, timeout=timeout)
    _CONTROL = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    print(f"| distributed init (rank {rank}/{world_size}, {backend})", flush=True)
    barrier()
    _silence_non_main(rank == 0)
    return info


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (a one-element list without distribution)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag):
    """True on every rank when ``flag`` is true on any: one decision all ranks act on together."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL)
    return bool(t.item())


def from_rank0(fn):
    """``fn()`` run on rank 0 only, its result (or its exception) given to every rank.

    For decisions that must not differ between ranks, e.g. what a file system shows when ranks
    have their own output folders.
    """
    if not is_dist():
        return fn()
    box = [None]
    if is_main_process():
        try:
            box[0] = (True, fn())
        except Exception as e:  # re-raised on every rank below, so no rank waits alone
            box[0] = (False, e)
    dist.broadcast_object_list(box, src=0, group=_CONTROL)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def all_reduce_mean(value):
    if not is_dist():
        return value
    t = torch.tensor(float(value), dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return (t / get_world_size()).item()


def cleanup():
    if is_dist():
        dist.destroy_process_group()

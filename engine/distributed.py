"""torch.distributed set-up for torchrun, SLURM, or a single process without a launcher."""
import builtins
import datetime
import os

import torch
import torch.distributed as dist


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


def barrier():
    # The release called barrier() unconditionally, which crashes a single process.
    if is_dist():
        dist.barrier()


def _silence_non_main(is_master):
    builtin_print = builtins.print

    def print_(*args, force=False, **kwargs):
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print_


def init_distributed_mode(args):
    """Fill ``args.rank/world_size/gpu/distributed`` from torchrun's or SLURM's environment."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ["SLURM_NTASKS"])
        args.gpu = int(os.environ.get("SLURM_LOCALID", 0))
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(args.rank), str(args.world_size)
        os.environ["LOCAL_RANK"] = str(args.gpu)
    else:
        args.rank, args.world_size, args.gpu, args.distributed = 0, 1, 0, False
        return
    args.distributed = args.world_size > 1
    use_cuda = str(args.device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(args.gpu)
        args.device = f"cuda:{args.gpu}"
    if not args.distributed:
        return
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", world_size=args.world_size, rank=args.rank,
                            timeout=datetime.timedelta(minutes=int(os.environ.get("SVFAP_DIST_TIMEOUT_MIN", 30))))
    print(f"| distributed init (rank {args.rank}/{args.world_size}, {backend})", flush=True)
    barrier()
    _silence_non_main(args.rank == 0)


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (a one-element list without distribution)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


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

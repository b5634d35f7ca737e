"""Set-up shared by the entry points: argument types, seeding, device and precision, loaders."""
import argparse
import ctypes
import ctypes.util
import os
import random
from contextlib import nullcontext

import numpy as np
import torch


def str2bool(value):
    """Booleans that parse as booleans: ``--normlize_target False`` means False (it did not in the release)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def bool_arg(parser, name, default, help=""):
    parser.add_argument(name, type=str2bool, nargs="?", const=True, default=default, help=help)


def add_common_args(p):
    """Arguments both entry points share (names and defaults of the release where it had them)."""
    p.add_argument("--batch_size", default=64, type=int, help="per-process batch size")
    p.add_argument("--epochs", default=100, type=int)
    p.add_argument("--update_freq", default=1, type=int, help="gradient accumulation steps")
    p.add_argument("--save_ckpt_freq", default=20, type=int)
    p.add_argument("--input_size", default=160, type=int)
    p.add_argument("--num_frames", default=16, type=int)
    p.add_argument("--sampling_rate", default=None, type=int, help="frame stride (dataset default when unset)")
    p.add_argument("--tubelet_size", default=2, type=int)
    p.add_argument("--drop_path", default=0.1, type=float)
    p.add_argument("--stage_depths", default=None, type=int, nargs="+", help="e.g. 12 6 3 (model default)")
    p.add_argument("--num_bottleneck_tokens", default=None, type=int, nargs="+")
    p.add_argument("--temporal_kernel_size", default=None, type=int)
    p.add_argument("--grad_checkpointing", type=str2bool, nargs="?", const=True, default=False)
    # optimisation
    p.add_argument("--opt", default="adamw", type=str)
    p.add_argument("--opt_eps", default=1e-8, type=float)
    p.add_argument("--opt_betas", default=None, type=float, nargs="+")
    p.add_argument("--clip_grad", default=None, type=float)
    p.add_argument("--momentum", default=0.9, type=float)
    p.add_argument("--weight_decay", default=0.05, type=float)
    p.add_argument("--weight_decay_end", default=None, type=float)
    p.add_argument("--lr", default=1e-3, type=float, help="base lr for a total batch of 256 (scaled linearly)")
    p.add_argument("--warmup_lr", default=1e-6, type=float)
    p.add_argument("--min_lr", default=1e-6, type=float)
    p.add_argument("--warmup_epochs", default=5, type=int)
    p.add_argument("--warmup_steps", default=-1, type=int)
    # data
    p.add_argument("--data_path", default="", type=str, help="folder with the split CSVs (or a CSV file)")
    p.add_argument("--data_root", default="", type=str, help="root the CSV paths are relative to")
    p.add_argument("--prefix_map", default=[], nargs="*", help="OLD=NEW path prefix rewrites for release CSVs")
    p.add_argument("--backend", default="pyav", choices=["pyav", "decord"],
                   help="video decoder (same frames either way); pyav skips the non-reference frames a "
                        "clip does not use, decord cannot, and falls back to pyav where it fails")
    bool_arg(p, "--strict", False, "raise on the first bad sample instead of replacing it")
    p.add_argument("--max_bad_fraction", default=0.01, type=float,
                   help="stop when more than this fraction of a split's samples is unreadable (counted once "
                        "per file over all workers and epochs)")
    p.add_argument("--num_workers", default=8, type=int)
    bool_arg(p, "--pin_mem", True)
    # output and run control
    p.add_argument("--output_dir", default="", help="checkpoints and reports")
    p.add_argument("--log_dir", default=None, help="TensorBoard logs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="auto", choices=["auto", "none", "fp16", "bf16"],
                   help="autocast precision; auto = bf16 on CUDA, none on CPU")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--resume", default="", help="checkpoint to resume from")
    bool_arg(p, "--auto_resume", True, "continue from the newest complete checkpoint in --output_dir")
    bool_arg(p, "--force_resume", False, "resume even when result-changing options differ from the checkpoint's "
                                         "(by default that is refused, with the list of differences)")
    p.add_argument("--keep_last", default=None, type=int,
                   help="keep only the newest K periodic checkpoints (best and latest are always kept)")
    p.add_argument("--trace_steps", default=None,
                   help="append one JSON line per training iteration (epoch, step, lr, sample indices) to this file")
    p.add_argument("--start_epoch", default=0, type=int)
    p.add_argument("--print_freq", default=20, type=int)
    bool_arg(p, "--compile", False, "torch.compile the model (same numbers as eager, faster steps after warm-up)")
    p.add_argument("--local_rank", "--local-rank", default=-1, type=int, help="ignored; torchrun sets LOCAL_RANK")
    p.add_argument("--dist_timeout", default=30, type=int,
                   help="minutes a process waits in a collective call for the others before the run fails")
    p.add_argument("--dist_on_itp", default=False, type=str2bool, help=argparse.SUPPRESS)
    p.add_argument("--dist_url", default="env://", help=argparse.SUPPRESS)
    return p


# glibc's mallopt parameters; 32 MiB is the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def keep_freed_host_memory():
    """Keep the memory of freed tensors in the process instead of handing it back to the kernel.

    By default glibc returns the free top of its heap to the kernel and serves large blocks with
    fresh mmaps, so a CPU training step, whose activations are all freed at its end, page-faults
    them in again at the next step: ~100k faults a step for svfap_base at batch 2, ~150k for
    videomae_base, 10-17% of their step time on a 2-core VM. With trimming off and the mmap
    threshold at its maximum, blocks up to 32 MiB are reused; the process keeps the memory of its
    largest step, which it needs every step anyway. Returns False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1 and ok


def seed_everything(seed, rank=0):
    seed = seed + rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def amp_dtype(args):
    cuda = str(args.device).startswith("cuda")
    choice = args.amp
    if choice == "auto":
        choice = "bf16" if cuda and torch.cuda.is_bf16_supported() else "none"
    args.amp = choice
    return {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]


def autocast(device, dtype):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device, dtype):
    """A loss scaler only for fp16; bf16 and fp32 need none."""
    enabled = dtype == torch.float16
    return torch.amp.GradScaler(torch.device(device).type, enabled=enabled) if enabled else None


def wrap_model(model, args, device):
    """The module the training loop calls: DDP when distributed, then ``torch.compile`` if asked.

    Checkpoints and evaluation keep using the plain ``model``.
    """
    wrapped = model
    if args.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.gpu] if torch.device(device).type == "cuda" else None)
    if args.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


class EpochSampler(torch.utils.data.DistributedSampler):
    """This process's share of a permutation fixed by (seed, epoch), whatever the number of processes
    and of earlier runs; ``set_epoch(e, skip=n)`` starts the epoch after its first ``n`` samples, so a
    run stopped mid-epoch continues with exactly the samples it had not yet seen."""

    def __init__(self, dataset, num_replicas, rank, seed, shuffle=True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return self.num_samples - self.skip


def build_loader(dataset, args, train, collate_fn=None):
    from .distributed import get_rank, get_world_size, is_dist

    if train:
        sampler = EpochSampler(dataset, get_world_size(), get_rank(), args.seed)
    elif is_dist() and getattr(args, "dist_eval", True):
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(),
                                                      shuffle=False)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    workers = args.num_workers
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=args.batch_size, num_workers=workers, drop_last=train,
        pin_memory=args.pin_mem and str(args.device).startswith("cuda"), persistent_workers=workers > 0 and train,
        collate_fn=collate_fn, worker_init_fn=_worker_init if workers > 0 else None)


def _worker_init(worker_id):
    # Decoders and numpy get their own seeds per worker; torch threads stay at 1 inside workers.
    from .interrupt import ignore_stop_signals
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    ignore_stop_signals()


def check_args(args):
    """Values no run can use, as one user error before anything starts."""
    from .cli import UserError
    for name in ("batch_size", "epochs", "update_freq", "num_frames", "input_size", "tubelet_size", "print_freq",
                 "save_ckpt_freq", "dist_timeout"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, not {value}")
    if getattr(args, "keep_last", None) is not None and args.keep_last < 1:
        raise UserError(f"--keep_last must be at least 1, not {args.keep_last}")
    if getattr(args, "num_workers", 0) < 0:
        raise UserError(f"--num_workers must be 0 or more, not {args.num_workers}")
    if not 0 <= getattr(args, "max_bad_fraction", 0) <= 1:
        raise UserError(f"--max_bad_fraction must be between 0 and 1, not {args.max_bad_fraction}")
    if args.num_frames % args.tubelet_size:
        raise UserError(f"--num_frames {args.num_frames} is not a multiple of --tubelet_size {args.tubelet_size}")
    import timm
    if not timm.is_model(args.model):
        import models
        raise UserError(f"unknown --model {args.model!r}; registered: {', '.join(models.MODEL_NAMES)}")


def prepare_output(args):
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    elif getattr(args, "eval", False):
        print("WARNING: no --output_dir: the reports (pred.csv, metrics.json) will not be written", flush=True)
    else:
        print("WARNING: no --output_dir: nothing of this run (checkpoints, logs, reports) will be saved", flush=True)
    if args.log_dir is None and args.output_dir:
        args.log_dir = os.path.join(args.output_dir, "tb")

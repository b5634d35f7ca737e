"""The machine a run uses: device, precision, seeds, host memory, the model wrapped for training."""
import ctypes
import ctypes.util
import random
from contextlib import nullcontext

import numpy as np
import torch

from .compile import compiled, start_line, use_cache_dir

PRECISIONS = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# glibc's mallopt parameters; 32 MiB is the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def keep_freed_host_memory():
    """Keep the memory of freed tensors in the process instead of handing it back to the kernel.

    By default glibc returns the free top of its heap to the kernel and serves large blocks with
    fresh mmaps, so a CPU training step, whose activations are all freed at its end, page-faults
    them in again at the next step (docs/benchmarks.md has the cost). With trimming off and the mmap
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


def pick_device(name=None):
    """``name`` (cpu, cuda, cuda:1), or CUDA when there is one; CUDA where there is none is a user error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        from .cli import UserError
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return torch.device(name)


def seed_everything(seed, rank=0):
    seed = seed + rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# CPU features with bf16 arithmetic in hardware. Without them oneDNN emulates bf16 on AVX-512
# (torch.ops.mkldnn._is_mkldnn_bf16_supported() says yes there too), slower than fp32.
NATIVE_BF16_CPU = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16():
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return any(capabilities.get(name, False) for name in NATIVE_BF16_CPU)


def precision(choice, device):
    """The autocast precision ``choice`` means on ``device``: ``auto`` is bf16 on CUDA GPUs that
    support it and on CPUs with native bf16 (AVX512-BF16 or AMX), none (fp32) elsewhere."""
    if choice != "auto":
        return choice
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "none"


def autocast(device, dtype):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device, dtype):
    """A loss scaler only for fp16; bf16 and fp32 need none."""
    enabled = dtype == torch.float16
    return torch.amp.GradScaler(torch.device(device).type, enabled=enabled) if enabled else None


def wrap_model(model, args, device):
    """The module the training loop calls: DDP when distributed, then ``torch.compile`` if
    ``args.compile`` (resolved to a bool), its caches in ``args.compile_cache``.

    Checkpoints and evaluation keep using the plain ``model``.
    """
    wrapped = model
    if args.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.gpu] if torch.device(device).type == "cuda" else None)
    if args.compile:
        use_cache_dir(getattr(args, "compile_cache", None))
        print(start_line(getattr(args, "compile_cache", None)))
        wrapped = compiled(wrapped, args.compile_mode)
    return wrapped

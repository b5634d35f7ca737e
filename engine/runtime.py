"""The machine a run uses: device, precision, host memory, the model wrapped for training."""
import ctypes
import ctypes.util
from contextlib import nullcontext

import torch

from .cli import UserError
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


def driver_cuda_version():
    """The highest CUDA version the NVIDIA driver supports (``"12.4"``), or None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def check_device(name):
    """``name`` as a torch.device; a CUDA device that is not usable here is a user error that says
    why (no GPU, a CPU-only torch, a driver older than torch's CUDA), never a silent CPU run."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name}: {e} (cuda, cuda:N or cpu)") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        built = torch.version.cuda
        driver = driver_cuda_version()
        if built is None:
            why = f"this torch {torch.__version__} is built without CUDA"
        elif driver is None:
            why = f"no NVIDIA driver was found (torch {torch.__version__} is built for CUDA {built})"
        else:
            why = (f"torch {torch.__version__} is built for CUDA {built}; the NVIDIA driver here supports CUDA up to "
                   f"{driver}" + (" (too old: see docs/cluster.md for torch's CUDA 12 build)"
                                  if _older(driver, built) else ", but no GPU is usable (CUDA_VISIBLE_DEVICES?)"))
        raise UserError(f"--device {name}: CUDA is not available: {why}. Use --device cpu to run on the CPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _older(a, b):
    return tuple(map(int, a.split("."))) < tuple(map(int, b.split(".")[:2]))


def pick_device(name=None):
    """``name`` (cpu, cuda, cuda:1), or CUDA when there is one; CUDA where there is none is a user error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name)


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
        if choice == "fp16" and torch.device(device).type == "cpu":
            print("WARNING: --amp fp16 on the CPU: fp16 arithmetic is emulated there, many times slower than fp32 "
                  "(--amp none) or native bf16 (--amp auto picks it where the CPU has it)", flush=True)
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

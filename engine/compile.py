"""torch.compile of the training step: whether (``--compile auto``: on CUDA, where the eager step is
bound by the host's per-op cost; not on CPU, where compiling takes minutes and gains little), in
which mode, and inductor's caches in the run's output folder.

Inductor keeps what it compiled (FX graphs, AOTAutograd graphs, C++ and Triton kernels) under
``TORCHINDUCTOR_CACHE_DIR``, by default in the node's temporary folder, which a requeued job on
another node does not see. Pointed at the output folder, a resumed or requeued run loads the
graphs instead of compiling them again; the run says after its first step which it did.
"""
import os

import torch

# torch.compile's modes; the reduce-overhead ones capture CUDA graphs (no launch overhead per kernel).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
CACHE_FOLDER = "compile_cache"  # under --output_dir


def compile_enabled(choice, device) -> bool:
    """``--compile``'s value (auto, True, False) on ``device``: auto compiles on CUDA only."""
    if choice == "auto":
        return torch.device(device).type == "cuda"
    return bool(choice)


def cache_dir(requested, output_dir):
    """Where inductor's caches go: ``--compile_cache``, else ``OUTPUT_DIR/compile_cache``; None leaves
    torch's default, the node's temporary folder (importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR
    to it, so an inherited value cannot be told from torch's own)."""
    if requested:
        return os.path.abspath(requested)
    return os.path.abspath(os.path.join(output_dir, CACHE_FOLDER)) if output_dir else None


def use_cache_dir(path):
    """Inductor's caches (and Triton's, which follow them unless ``TRITON_CACHE_DIR`` is set) in ``path``
    from now on; read at each compilation, so it must be set before the first one."""
    if path:
        os.makedirs(path, exist_ok=True)
        os.environ[CACHE_ENV] = path


def compiled(module, mode="default", fullgraph=False, backend="inductor"):
    """``torch.compile(module)`` in one of :data:`COMPILE_MODES` (inductor's; other backends, for
    tests, have none)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; one of {', '.join(COMPILE_MODES)}")
    mode = None if mode == "default" or backend != "inductor" else mode
    return torch.compile(module, mode=mode, fullgraph=fullgraph, backend=backend)


def cache_counts():
    """(graphs loaded from inductor's cache, graphs compiled) so far in this process."""
    from torch._dynamo.utils import counters
    return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]


def compile_seconds():
    """Seconds this process spent compiling so far (dynamo, AOTAutograd and inductor, forward and backward)."""
    from torch._dynamo.utils import calculate_time_spent
    return calculate_time_spent().get("total_wall_time", 0.0)


def start_line(path):
    """The run's first word on compiling: where the cache is and whether it holds anything yet."""
    if not path:
        return "torch.compile: at the first step; inductor cache in torch's default folder (not kept across nodes)"
    files = sum(len(names) for _, _, names in os.walk(path))
    return f"torch.compile: at the first step; inductor cache {path} ({files} files there)"


def first_step_line():
    """After the first step (which compiled the forward and backward): how long that took and whether
    the graphs came from the cache."""
    hits, misses = cache_counts()
    if not hits and not misses:
        return "torch.compile: no graph was compiled at the first step (see torch's messages above): running eagerly"
    verdict = "cache hit" if not misses else "cache miss" if not hits else "partial cache hit"
    return (f"torch.compile: {compile_seconds():.1f} s compiling the first step; {verdict}: {hits} graphs loaded "
            f"from the cache, {misses} compiled")

"""The options both entry points share, the model options of the tools, and the checks of their values."""
import argparse

import timm

import models
from datasets.video_io import BACKENDS, DEFAULT_BACKEND
from models.from_checkpoint import CLIP_KEYS, MODEL_KEYS, OUTPUT_KEYS
from models.variants import PATCH_SIZE

from .cli import UserError, int_list
from .compile import COMPILE_MODES
from .runtime import PRECISIONS


def str2bool(value):
    """Booleans that parse as booleans: ``--normlize_target False`` means False."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def auto_or_bool(value):
    """``auto`` or a boolean (:func:`str2bool`)."""
    return "auto" if str(value).strip().lower() == "auto" else str2bool(value)


def bool_arg(parser, name, default, help="", aliases=()):
    """One boolean option in every spelling the release and VideoMAE use: ``--name`` (True),
    ``--name True/False`` and ``--no_name`` (False); ``aliases`` are other names of the same option."""
    dest = name.lstrip("-")
    parser.add_argument(name, *aliases, dest=dest, type=str2bool, nargs="?", const=True, default=default, help=help)
    parser.add_argument(*(f"--no_{n.lstrip('-')}" for n in (name, *aliases)), dest=dest, action="store_false",
                        default=argparse.SUPPRESS, help=f"{name} False")


def add_common_args(p):
    """Options both entry points share (the release's names where it had them). The recipe's
    values are set by each entry point from engine/recipes.py."""
    p.add_argument("--batch_size", default=64, type=int, help="per-process batch size")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--update_freq", default=1, type=int, help="gradient accumulation steps")
    p.add_argument("--input_size", type=int, help="clip side in pixels")
    p.add_argument("--num_frames", type=int, help="frames per clip")
    p.add_argument("--sampling_rate", default=None, type=int, help="frame stride (dataset default when unset)")
    p.add_argument("--tubelet_size", default=2, type=int, help="frames per token")
    p.add_argument("--drop_path", type=float, help="stochastic depth rate, rising over the blocks to this value")
    p.add_argument("--stage_depths", default=None, type=int, nargs="+", help="e.g. 12 6 3 (model default)")
    p.add_argument("--num_bottleneck_tokens", default=None, type=int, nargs="+",
                   help="bottleneck tokens per time step, one value or one per later stage (model default)")
    p.add_argument("--temporal_kernel_size", default=None, type=int,
                   help="time steps merged by each temporal-pyramid stage (model default)")
    bool_arg(p, "--grad_checkpointing", False, "recompute activations in the backward pass (less memory)",
             aliases=("--use_checkpoint",))
    # optimisation
    p.add_argument("--opt", default="adamw", type=str, help="optimizer, any name timm's create_optimizer_v2 knows")
    p.add_argument("--opt_eps", type=float, help="optimizer epsilon")
    p.add_argument("--opt_betas", type=float, nargs="+", help="AdamW betas")
    p.add_argument("--clip_grad", default=None, type=float, help="clip the gradient norm to this (none if unset)")
    p.add_argument("--momentum", default=0.9, type=float, help="SGD momentum (with --opt sgd)")
    p.add_argument("--weight_decay", type=float, help="weight decay (none on biases, norms and position tables)")
    p.add_argument("--weight_decay_end", default=None, type=float,
                   help="weight decay at the last step, reached by a cosine (constant if unset)")
    p.add_argument("--lr", type=float, help="base lr for a total batch of 256 (scaled linearly)")
    p.add_argument("--warmup_lr", type=float, help="lr the warm-up starts from (scaled like --lr)")
    p.add_argument("--min_lr", type=float, help="lr the cosine ends at (scaled like --lr)")
    p.add_argument("--warmup_epochs", type=int, help="epochs of linear lr warm-up")
    p.add_argument("--warmup_steps", default=-1, type=int, help="warm-up in optimisation steps (overrides --warmup_epochs when > 0)")
    # data
    p.add_argument("--data_path", default="", type=str, help="folder with the split CSVs (or a CSV file)")
    p.add_argument("--data_root", default="", type=str, help="root the CSV paths are relative to")
    p.add_argument("--prefix_map", default=[], nargs="*", help="OLD=NEW path prefix rewrites for release CSVs")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="video decoder (same frames either way); pyav skips the non-reference frames a "
                        "clip does not use, decord cannot, and falls back to pyav where it fails")
    bool_arg(p, "--strict", False, "raise on the first bad sample instead of replacing it")
    p.add_argument("--max_bad_fraction", default=0.01, type=float,
                   help="stop when more than this fraction of a split's samples is unreadable (counted once "
                        "per file over all workers and epochs)")
    p.add_argument("--num_workers", default=8, type=int, help="data loading processes per GPU process")
    bool_arg(p, "--pin_mem", True, "pinned host memory for faster copies to the GPU")
    # output and run control
    p.add_argument("--output_dir", default="", help="checkpoints and reports")
    p.add_argument("--log_dir", default=None, help="TensorBoard logs")
    p.add_argument("--device", default="cuda",
                   help="cuda, cuda:N or cpu; a CUDA device that is not there is an error, never a silent CPU run")
    p.add_argument("--amp", default="auto", choices=["auto", *PRECISIONS],
                   help="autocast precision; auto = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16, "
                        "AMX), else none (fp32)")
    p.add_argument("--seed", default=0, type=int, help="seeds the data order, augmentation and initialisation")
    p.add_argument("--resume", default="", help="checkpoint to resume from")
    bool_arg(p, "--auto_resume", True, "continue from the newest complete checkpoint in --output_dir")
    bool_arg(p, "--force_resume", False, "resume even when result-changing options differ from the checkpoint's "
                                         "(by default that is refused, with the list of differences)")
    bool_arg(p, "--save_ckpt", True, "write checkpoints (--no_save_ckpt: none, not even on a stop request)")
    p.add_argument("--save_ckpt_freq", default=10, type=int, help="write checkpoint-N.pth every this many epochs")
    p.add_argument("--keep_last", default=None, type=int,
                   help="keep only the newest K periodic checkpoints (best and latest are always kept)")
    p.add_argument("--trace_steps", default=None,
                   help="append one JSON line per training iteration (epoch, step, lr, sample indices) to this file")
    p.add_argument("--start_epoch", default=0, type=int, help="first epoch (a resumed run continues where it stopped)")
    p.add_argument("--print_freq", default=20, type=int, help="iterations between progress lines")
    p.add_argument("--compile", default="auto", type=auto_or_bool, nargs="?", const=True, metavar="{auto,True,False}",
                   help="torch.compile the model (same numbers as eager, faster steps once compiled); auto = on "
                        "CUDA, not on CPU")
    p.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode when compiling; reduce-overhead uses CUDA graphs on GPUs "
                        "(python -m tools.benchmark.gpu_check measures the modes)")
    p.add_argument("--compile_cache", default=None, metavar="DIR",
                   help="folder for inductor's compiled graphs and kernels, which a resumed or requeued run (on any "
                        "node) reuses; default: OUTPUT_DIR/compile_cache")
    p.add_argument("--local_rank", "--local-rank", default=-1, type=int, help="ignored; torchrun sets LOCAL_RANK")
    p.add_argument("--dist_timeout", default=30, type=int,
                   help="minutes a process waits in a collective call for the others before the run fails")
    return p


# Options whose value must lie in a range: (low, high, whether each end is allowed).
RANGES = {
    "lr": (0, None, False), "min_lr": (0, None, True), "warmup_lr": (0, None, True), "weight_decay": (0, None, True),
    "weight_decay_end": (0, None, True), "layer_decay": (0, 1, False, True), "drop_path": (0, 1, True, False),
    "drop": (0, 1, True, False), "attn_drop_rate": (0, 1, True, False), "smoothing": (0, 1, True, False),
    "reprob": (0, 1, True, True), "mixup": (0, None, True), "cutmix": (0, None, True),
    "mixup_prob": (0, 1, True, True), "mixup_switch_prob": (0, 1, True, True), "model_ema_decay": (0, 1, True, True),
    "warmup_epochs": (0, None, True), "clip_grad": (0, None, False), "opt_eps": (0, None, False),
    "init_scale": (0, None, True), "momentum": (0, 1, True, True),
}


def check_ranges(args):
    for name, (low, high, *closed) in RANGES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        low_ok = value >= low if closed[0] else value > low
        high_ok = high is None or (value <= high if closed[-1] else value < high)
        if not (low_ok and high_ok):
            where = (f"{'at least' if closed[0] else 'above'} {low}" if high is None else
                     f"in {'[' if closed[0] else '('}{low}, {high}{']' if closed[-1] else ')'}")
            raise UserError(f"--{name} must be {where}, not {value}")
    betas = getattr(args, "opt_betas", None)
    if betas and not all(0 <= b < 1 for b in betas):
        raise UserError(f"--opt_betas must lie in [0, 1), not {' '.join(map(str, betas))}")


def check_args(args):
    """Values no run can use, as one user error before anything starts."""
    for name in ("batch_size", "epochs", "update_freq", "num_frames", "input_size", "tubelet_size", "print_freq",
                 "save_ckpt_freq", "dist_timeout", "num_samples", "num_sample", "test_num_segment", "test_num_crop",
                 "val_freq", "sampling_rate", "recount"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, not {value}")
    check_ranges(args)
    if getattr(args, "keep_last", None) is not None and args.keep_last < 1:
        raise UserError(f"--keep_last must be at least 1, not {args.keep_last}")
    if getattr(args, "num_workers", 0) < 0:
        raise UserError(f"--num_workers must be 0 or more, not {args.num_workers}")
    if not 0 <= getattr(args, "max_bad_fraction", 0) <= 1:
        raise UserError(f"--max_bad_fraction must be between 0 and 1, not {args.max_bad_fraction}")
    if args.num_frames % args.tubelet_size:
        raise UserError(f"--num_frames {args.num_frames} is not a multiple of --tubelet_size {args.tubelet_size}")
    if args.input_size % PATCH_SIZE:
        raise UserError(f"--input_size {args.input_size} is not a multiple of the patch size {PATCH_SIZE}")
    if getattr(args, "mask_ratio", None) is not None:
        positions = (args.input_size // PATCH_SIZE) ** 2
        masked = int(args.mask_ratio * positions)
        if not 0 < args.mask_ratio < 1 or not 1 <= masked < positions:
            raise UserError(f"--mask_ratio {args.mask_ratio} masks {masked} of the {positions} positions of a "
                            f"{args.input_size}px frame: it must leave at least one masked and one visible")
    if not timm.is_model(args.model):
        raise UserError(f"unknown --model {args.model!r}; registered: {', '.join(models.MODEL_NAMES)}")


def add_model_options(parser):
    """Options of the tools that restate what a checkpoint records (all default to the checkpoint's
    values; one that disagrees is an error unless ``--force_config``)."""
    g = parser.add_argument_group("model and clips (default: what the checkpoint records)")
    g.add_argument("--model", default=None, help="registered model name")
    g.add_argument("--input_size", type=int, default=None, help="clip side in pixels")
    g.add_argument("--num_frames", type=int, default=None, help="frames per clip")
    g.add_argument("--sampling_rate", type=int, default=None, help="frame stride inside a clip")
    g.add_argument("--tubelet_size", type=int, default=None, help="frames per token")
    g.add_argument("--short_side_size", type=int, default=None, help="frames are resized to this before the crop")
    g.add_argument("--frame_resize", default=None, choices=["square", "keep_aspect"],
                   help="square: to short_side x short_side (the release's); keep_aspect: the short side")
    g.add_argument("--stage_depths", type=int_list, default=None, help="e.g. '12 6 3' or 12,6,3")
    g.add_argument("--num_bottleneck_tokens", type=int_list, default=None, help="bottleneck tokens per time step")
    g.add_argument("--embed_dim", type=int, default=None, help="only for models trained with a custom width")
    g.add_argument("--num_heads", type=int, default=None, help="attention heads (with --embed_dim)")
    g.add_argument("--temporal_kernel_size", type=int, default=None, help="time steps merged per pyramid stage")
    g.add_argument("--data_set", default=None, help="registered dataset name (class names), or custom")
    g.add_argument("--nb_classes", type=int, default=None, help="outputs of the classifier")
    g.add_argument("--task", default=None, choices=["classification", "regression", "clip_classification"],
                   help="what the outputs are (the dataset's)")
    g.add_argument("--force_config", action="store_true",
                   help="let these options override what the checkpoint records (a conflict is an error otherwise)")
    g.add_argument("--backbone", default=None,
                   help="a linear/LoRA checkpoint's backbone file, if it moved from the path the checkpoint records")
    return g


def typed_options(args):
    """``{option: value}`` of the model options a tool's user gave (their default is None), with
    ``backbone`` (which ``models.model_from_checkpoint`` reads); ``args`` is a namespace or a dict."""
    values = args if isinstance(args, dict) else vars(args)
    # --class_names only names what is shown: it may differ from what the checkpoint recorded.
    keys = tuple(k for k in MODEL_KEYS + CLIP_KEYS + OUTPUT_KEYS if k != "class_names") + ("backbone",)
    typed = {k: v for k, v in values.items() if k in keys and v is not None}
    for key, value in typed.items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in numbers):
            raise UserError(f"--{key} must be at least 1, not {value}")
    if typed.get("input_size", PATCH_SIZE) % PATCH_SIZE:
        raise UserError(f"--input_size {typed['input_size']} is not a multiple of the patch size {PATCH_SIZE}")
    return typed

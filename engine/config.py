"""From parsed options to a run's settings: the checks, the distributed set-up and every derived
value (precision, dataset defaults, the checkpoint's configuration under --eval, scaled lrs, patch
size, output folders), resolved once, right after parsing. Nothing else writes to ``args``."""
import os
from dataclasses import replace

import torch

from datasets.registry import check_recorded_names, get_dataset_info, read_class_names
from models import checkpoint_args, read_checkpoint
from models.from_checkpoint import CLIP_KEYS, MODEL_KEYS, checkpoint_config
from models.variants import PATCH_SIZE

from . import distributed as dist
from .cli import UserError
from .compile import cache_dir, compile_enabled
from .optim import scaled_lrs
from .options import check_args
from .rundir import prepare
from .runtime import check_device, precision
from .tuning import check_tuning_args, tuning_defaults


def resolve(args, kind, given=frozenset()):
    """Complete ``args`` for a ``kind`` ("pretrain" or "finetune") run; ``given`` are the options
    typed on the command line. Returns ``(dataset info, the checkpoint --eval tests or None)``."""
    check_args(args)
    check_device(args.device)
    vars(args).update(dist.init_distributed_mode(args.device, args.dist_timeout))
    # A requeue may land on a node where auto means another precision: what was asked is compared.
    args.amp_requested = args.amp
    requested, args.amp = args.amp, precision(args.amp, args.device)
    if requested == "auto":
        print(f"precision: {args.amp} (--amp auto on {args.device}: bf16 on CUDA and on CPUs with native bf16)")
    checkpoint = _evaluated_checkpoint(args, given) if getattr(args, "eval", False) else None
    if kind == "finetune":
        tuning_defaults(args, given)
        check_tuning_args(args)
        recorded = checkpoint_args(checkpoint).get("class_names") if checkpoint is not None else None
        info = _named_outputs(get_dataset_info(args.data_set, args.nb_classes, args.task), args, recorded)
        args.class_names = list(info.classes or info.targets)
        args.nb_classes = info.num_outputs
        args.num_targets = len(info.targets) if info.task == "regression" else None
        args.val_metric = args.val_metric or info.metric
    else:
        info = get_dataset_info(args.data_set)
    # Repeated sampling (--num_samples, the release's --num_sample) puts K clips of a video in a batch.
    args.clips_per_video = args.num_sample if kind == "finetune" else args.num_samples
    args.sampling_rate = args.sampling_rate or info.sampling_rate
    args.patch_size = PATCH_SIZE
    if checkpoint is None:
        vars(args).update(scaled_lrs(args))
    _prepare_output(args, kind)
    _resolve_compile(args)
    return info, checkpoint


def _resolve_compile(args):
    training = not getattr(args, "eval", False)  # evaluation runs eagerly
    requested, args.compile = args.compile, compile_enabled(args.compile, args.device) and training
    if requested == "auto" and training:
        print(f"torch.compile: {'on' if args.compile else 'off'} (--compile auto on {args.device}: on CUDA only)")
        # Chosen for the user: a model that fails to compile runs eagerly (torch prints why)
        # instead of stopping the run; an explicit --compile True raises.
        torch._dynamo.config.suppress_errors = args.compile
    args.compile_cache = cache_dir(args.compile_cache, args.output_dir) if args.compile else None


def _evaluated_checkpoint(args, given):
    """The checkpoint --eval tests, with the model and clip settings it records taken into ``args``
    (typed options that disagree are an error unless --force_config)."""
    path = args.finetune or args.resume
    if not path:
        raise UserError("--eval needs a checkpoint: --finetune PATH (or --resume PATH)")
    checkpoint = read_checkpoint(path)
    keys = tuple(k for k in MODEL_KEYS + CLIP_KEYS if hasattr(args, k))
    typed = {k: getattr(args, k) for k in keys if k in given}
    config, adopted = checkpoint_config(checkpoint_args(checkpoint), typed, args.force_config, keys)
    changed = {k: v for k, v in adopted.items() if _plain(v) != _plain(getattr(args, k))}
    for key, value in config.items():
        setattr(args, key, _plain(value))
    if changed:
        print("from the checkpoint: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return checkpoint


def _named_outputs(info, args, recorded=None):
    """The dataset's outputs named by --class_names (a comma list or a file), else by a classes.txt
    beside a custom dataset's split files (the demo writes one), else by the registry. Under --eval
    the names the checkpoint ``recorded`` are the truth: given names must be the same, in order."""
    source = args.class_names
    beside = os.path.join(args.data_path, "classes.txt")
    if not source and info.name == "custom" and os.path.isfile(beside):
        source = beside
    if recorded and len(recorded) != info.num_outputs:
        recorded = None  # another head (a pre-trained or re-headed file): nothing to hold the names to
    if not source and not recorded:
        return info
    if source:
        names = tuple(read_class_names(source) if isinstance(source, str) else source)
        if len(names) != info.num_outputs:
            raise UserError(f"{len(names)} names ({', '.join(names[:8])}) from {source!r} for {info.num_outputs} "
                            f"{'targets' if info.targets else 'classes'} of {info.name}")
        names = tuple(check_recorded_names(names, recorded, source if isinstance(source, str) else "--class_names"))
    else:
        names = tuple(recorded)
    return replace(info, **({"targets": names} if info.targets else {"classes": names}))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _prepare_output(args, kind):
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        prepare(args, kind)  # the folder's lock, and args.json
    elif getattr(args, "eval", False):
        print("WARNING: no --output_dir: the reports (pred.csv, metrics.json) will not be written", flush=True)
    else:
        print("WARNING: no --output_dir: nothing of this run (checkpoints, logs, reports) will be saved", flush=True)
    if args.log_dir is None and args.output_dir:
        args.log_dir = os.path.join(args.output_dir, "tb")

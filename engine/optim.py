"""Optimizer with layer-wise lr decay (timm), per-step cosine lr (timm) and weight-decay schedules."""
import math

import numpy as np
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler


def effective_batch_size(args):
    """Clips per optimisation step: repeated sampling counts, as in MAE-ST (docs/differences.md)."""
    return args.batch_size * args.clips_per_video * args.update_freq * args.world_size


def batch_line(args):
    """What a step takes and the lr it gets, for the start of a run."""
    k = args.clips_per_video
    repeated = f" ({args.batch_size} videos x {k} clips per process and micro-batch)" if k > 1 else ""
    return (f"effective batch {effective_batch_size(args)} clips{repeated}, lr {args.lr:.3e} "
            f"(base {args.base_lr:.1e} x {effective_batch_size(args) / 256:.3f})")


def scaled_lrs(args):
    """The release's linear scaling: every lr option is a base value for a total batch of 256.
    Returns ``{"base_lr", "lr", "min_lr", "warmup_lr"}`` for the run's effective batch."""
    factor = effective_batch_size(args) / 256
    return {"base_lr": args.lr, "lr": args.lr * factor, "min_lr": args.min_lr * factor,
            "warmup_lr": args.warmup_lr * factor}


# Which layer the TPSBT's temporal downsampling convs and bottleneck modules count as in layer-wise
# lr decay: "release", the top one (full lr: the release's layer ids put every parameter that is
# neither a block's nor the embedding's there); "stage", the first block of their stage.
LAYER_DECAY_SCHEMES = ("release", "stage")


def build_optimizer(args, model):
    """AdamW (or ``--opt``); no weight decay on 1-D params and the model's ``no_weight_decay`` set."""
    kwargs = {}
    if getattr(args, "opt_betas", None):
        kwargs["betas"] = tuple(args.opt_betas)
    if getattr(args, "opt_eps", None) is not None:
        kwargs["eps"] = args.opt_eps
    if args.opt.lower() in ("adam", "adamw") and _fused_ok(model):
        # One fused kernel per step instead of a Python loop over ~300 tensors, and no
        # full-size temporaries (foreach's) in peak memory.
        kwargs["fused"] = True
    layer_decay = getattr(args, "layer_decay", None)
    if hasattr(model, "layer_decay_scheme"):
        model.layer_decay_scheme = getattr(args, "layer_decay_scheme", "release")
    optimizer = create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
        layer_decay=layer_decay if layer_decay is not None and layer_decay < 1.0 else None,
        momentum=getattr(args, "momentum", 0.9), **kwargs)
    for group in optimizer.param_groups:
        # Remember which groups decay, so the weight-decay schedule leaves the others at zero.
        group["decays"] = group["weight_decay"] > 0
        group.setdefault("lr_scale", 1.0)
    return optimizer


def _fused_ok(model):
    params = [p for p in model.parameters() if p.requires_grad]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class Schedules:
    """Per-iteration lr (timm's cosine with warm-up prefix) and cosine weight decay."""

    def __init__(self, args, optimizer, steps_per_epoch):
        self.optimizer = optimizer
        total = args.epochs * steps_per_epoch
        warmup = args.warmup_steps if args.warmup_steps > 0 else args.warmup_epochs * steps_per_epoch
        warmup = min(warmup, max(total - 1, 0))
        self.lr = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=args.min_lr,
                                    warmup_t=warmup, warmup_lr_init=args.warmup_lr, warmup_prefix=True,
                                    t_in_epochs=False)
        wd_end = args.weight_decay if args.weight_decay_end is None else args.weight_decay_end
        steps = np.arange(max(total, 1))
        self.wd = wd_end + 0.5 * (args.weight_decay - wd_end) * (1 + np.cos(math.pi * steps / max(total, 1)))

    def step(self, global_step):
        self.lr.step_update(global_step)
        wd = float(self.wd[min(global_step, len(self.wd) - 1)])
        for group in self.optimizer.param_groups:
            if group.get("decays"):
                group["weight_decay"] = wd

    def current(self):
        groups = self.optimizer.param_groups
        lr = max(g["lr"] for g in groups)
        wd = max(g["weight_decay"] for g in groups)
        return lr, wd

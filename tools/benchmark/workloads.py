"""What the step benchmark runs: the models at their registered sizes (or tiny ones with
--quick), their inputs, one training / inference / pre-training step, and its FLOPs."""
import statistics
import time
from argparse import Namespace
from contextlib import nullcontext

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import models
from datasets.masking import TubeMaskGenerator
from engine.runtime import PRECISIONS, autocast, compiled, grad_scaler
from engine.optim import build_optimizer
from engine.pretrain import reconstruction_target
from engine.train_step import Stepper
from models import variants

# Short name -> (timm name of the fine-tuning model, registered size).
MODELS = {
    "svfap_base": ("svfap_base_patch16_160", variants.SVFAP_BASE),
    "svfap_small": ("svfap_small_patch16_160", variants.SVFAP_SMALL),
    "videomae_base": ("videomae_base_patch16_160", variants.VIDEOMAE_BASE),
}
BASELINE = "videomae_base"
PRETRAIN_MODELS = ["svfap_base", "videomae_base"]
MASK_RATIO = 0.9


def quick_overrides(short, pretrain):
    """A tiny model of the same family: same stage count, 1 block per stage, 1/8 of the width."""
    size = MODELS[short][1]
    width = size["embed_dim"] // 8
    kw = dict(img_size=32, stage_depths=tuple(1 for _ in size["stage_depths"]))
    if pretrain:
        return dict(kw, embed_dim=width, num_frames=8, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)
    return dict(kw, embed_dim=width, num_frames=8)


def build_model(short, pretrain, args, ckpt=False):
    name = ("pretrain_" if pretrain else "") + MODELS[short][0]
    kw = quick_overrides(short, pretrain) if args.quick else {}
    if not pretrain:
        kw["drop_path_rate"] = 0.1  # the fine-tuning recipe's; pre-training uses none
    model = timm.create_model(name, **kw)
    model.set_grad_checkpointing(ckpt)
    return model.to(args.device)


def clip_shape(model):
    embed = model.encoder.patch_embed if hasattr(model, "encoder") else model.patch_embed
    tubelet, patch, _ = embed.proj.kernel_size
    t, h, w = embed.grid_size
    return 3, t * tubelet, h * patch, w * patch


def tube_masks(model, batch):
    embed = model.encoder.patch_embed
    generate = TubeMaskGenerator(embed.grid_size, MASK_RATIO)
    return torch.from_numpy(np.stack([generate() for _ in range(batch)]))


def make_inputs(model, batch, pretrain, args):
    x = torch.randn(batch, *clip_shape(model), device=args.device)
    if pretrain:
        return x, tube_masks(model, batch).to(args.device)
    return x, torch.randint(0, model.num_classes, (batch,), device=args.device)


def make_optimizer(model, batch, pretrain):
    # The recipes of docs/recipes.md; the values do not change the cost, the param groups do.
    opt = Namespace(opt="adamw", lr=(3e-4 if pretrain else 1e-3) * batch / 256, weight_decay=0.05,
                    opt_eps=1e-8, momentum=0.9, opt_betas=(0.9, 0.95) if pretrain else (0.9, 0.999),
                    layer_decay=None if pretrain else 0.75)
    optimizer = build_optimizer(opt, model)
    # Allocate AdamW's state now, so that a single measured step already has the steady-state
    # footprint (the state exists during every later forward and backward).
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def sdpa_context(args):
    # On CUDA, fail loudly instead of silently falling back to the math attention kernel.
    if args.device.startswith("cuda"):
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.CUDNN_ATTENTION])
    return nullcontext()


def with_precision(args, amp):
    """``args`` with the autocast dtype of precision ``amp`` (a row's own), or as they are."""
    return Namespace(**{**vars(args), "amp_dtype": PRECISIONS[amp]}) if amp else args


def make_step(group, model, batch, args):
    """A callable running one step of ``group`` ('train', 'infer' or 'pretrain') on ``model``."""
    pretrain = group == "pretrain"
    x, y = make_inputs(model, batch, pretrain, args)
    run = compiled(model, args.compile_mode) if args.compile else model
    if group == "infer":
        model.eval()

        def infer():
            with torch.no_grad(), sdpa_context(args), autocast(args.device, args.amp_dtype):
                run(x)
        return infer

    model.train()
    stepper = Stepper(model, make_optimizer(model, batch, pretrain), None, grad_scaler(args.device, args.amp_dtype),
                      Namespace(update_freq=1, clip_grad=None))
    if pretrain:
        tubelet, patch, _ = model.encoder.patch_embed.proj.kernel_size

    def train():
        with sdpa_context(args):
            if pretrain:
                with torch.no_grad():
                    target = reconstruction_target(x, y, patch, tubelet)
                with autocast(args.device, args.amp_dtype):
                    out = run(x, y)
                loss = F.mse_loss(out.float(), target)
            else:
                with autocast(args.device, args.amp_dtype):
                    out = run(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
            stepper(loss, 0, 0)
    return train


def step_flops(group, model, args):
    """FLOPs per clip of one step: the forward counted once, x3 for forward + backward."""
    x, y = make_inputs(model, 1, group == "pretrain", args)
    inputs = (x, y) if group == "pretrain" else (x,)
    return 2 * models.count_macs(model, *inputs) * (1 if group == "infer" else 3)


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, warmup, repeats, args):
    for _ in range(warmup):
        fn()
    sync(args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(args):
    """(median seconds, flops, side, repeats) of a large square matmul in the models' compute dtype."""
    dtype = args.amp_dtype or torch.float32
    n = 256 if args.quick else (8192 if args.device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=args.device, dtype=dtype)
    b = torch.randn(n, n, device=args.device, dtype=dtype)
    reps = 3 if args.quick else (50 if args.device.startswith("cuda") else 10)
    return median_seconds(lambda: a @ b, max(2, reps // 5), reps, args), 2.0 * n ** 3, n, reps

"""What the benchmarks run: the models at their registered sizes (or tiny ones with --quick), and one
step of each kind as the entry points run it, through the engine's own functions.

A training step takes a batch as the loader delivers it (uint8 frames, tube masks or labels) and
does what run_pretrain / run_finetune do with it: the move to the model's normalised float clips
and the pre-training targets on the device, the forward under autocast with the masked-token
count as a static shape, the loss, backward and the fused AdamW step of the recipe.
"""
import statistics
import time
from argparse import Namespace
from contextlib import nullcontext

import numpy as np
import timm
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch.nn.attention import SDPBackend, sdpa_kernel

import models
from datasets import transforms as T
from datasets.masking import TubeMaskGenerator
from engine.compile import compiled
from engine.device_batch import ModelInput
from engine.finetune import classification_loss
from engine.optim import build_optimizer
from engine.pretrain import reconstruction_loss
from engine.recipes import FINETUNE, PRETRAIN
from engine.runtime import PRECISIONS, autocast, grad_scaler
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


def quick_overrides(short, pretrain):
    """A tiny model of the same family: same stage count, 1 block per stage, 1/8 of the width."""
    size = MODELS[short][1]
    kw = dict(img_size=32, num_frames=8, embed_dim=size["embed_dim"] // 8,
              stage_depths=tuple(1 for _ in size["stage_depths"]))
    return dict(kw, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1) if pretrain else kw


def build_model(short, pretrain, args, ckpt=False):
    name = ("pretrain_" if pretrain else "") + MODELS[short][0]
    kw = quick_overrides(short, pretrain) if args.quick else {}
    if not pretrain:
        kw["drop_path_rate"] = FINETUNE["drop_path"]
    model = timm.create_model(name, **kw)
    model.set_grad_checkpointing(ckpt)
    return model.to(args.device)


def clip_shape(model):
    """(frames, height, width) of the model's clips."""
    embed = model.encoder.patch_embed if hasattr(model, "encoder") else model.patch_embed
    tubelet, patch, _ = embed.proj.kernel_size
    t, h, w = embed.grid_size
    return t * tubelet, h * patch, w * patch


def mask_generator(model):
    return TubeMaskGenerator(model.encoder.patch_embed.grid_size, PRETRAIN["mask_ratio"])


def make_batch(model, batch, pretrain, device, seed=0):
    """A batch as the loader delivers it: uint8 frames ``(B, T, H, W, 3)`` with tube masks (pre-training)
    or labels, on ``device``."""
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(rng.integers(0, 256, (batch, *clip_shape(model), 3), dtype=np.uint8)).to(device)
    if pretrain:
        generate = mask_generator(model)
        second = torch.from_numpy(np.stack([generate(rng) for _ in range(batch)]))
    else:
        second = torch.from_numpy(rng.integers(0, model.num_classes, batch))
    return frames, second.to(device), torch.arange(batch)


def make_optimizer(model, batch, pretrain):
    # The recipes of engine/recipes.py; the values do not change the cost, the param groups do.
    recipe = PRETRAIN if pretrain else FINETUNE
    opt = Namespace(opt="adamw", lr=recipe["lr"] * batch / 256, weight_decay=recipe["weight_decay"],
                    opt_eps=recipe["opt_eps"], momentum=0.9, opt_betas=recipe["opt_betas"],
                    layer_decay=recipe.get("layer_decay"))
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


def compiled_for(model, args):
    """The module the step calls: the model, or (args.compile) the model compiled in args.compile_mode
    as one graph: a graph break is an error here, not a slow row."""
    if not args.compile:
        return model
    return compiled(model, args.compile_mode, fullgraph=True, backend=getattr(args, "compile_backend", "inductor"))


def training_loss(kind, model, run, args):
    """``compute_loss(batch)`` of the entry point: run_pretrain's reconstruction loss, or run_finetune's
    classification loss with the recipe's random erasing, mixup / cutmix and label smoothing."""
    if kind == "pretrain":
        return reconstruction_loss(run, args.device, args.amp_dtype, PRETRAIN["normlize_target"],
                                   num_masked=mask_generator(model).num_masked)
    mixup = Mixup(mixup_alpha=FINETUNE["mixup"], cutmix_alpha=FINETUNE["cutmix"], prob=FINETUNE["mixup_prob"],
                  switch_prob=FINETUNE["mixup_switch_prob"], mode=FINETUNE["mixup_mode"],
                  label_smoothing=FINETUNE["smoothing"], num_classes=model.num_classes)
    return classification_loss(run, SoftTargetCrossEntropy(), args.device, args.amp_dtype, mixup,
                               ModelInput(args.device, FINETUNE["reprob"]))


def make_step(group, model, batch, args, data=()):
    """A callable running one step of ``group`` on ``model``: 'train' (fine-tuning) and 'pretrain' as the
    entry points train (returning the loss), 'infer' as they evaluate (normalisation and forward, no
    gradient). Its batch is a random one of ``batch`` clips on the device; with ``data=None`` the
    callable takes the batch (a loader's) as its argument."""
    pretrain = group == "pretrain"
    fixed = make_batch(model, batch, pretrain, args.device) if data is not None else None
    run = compiled_for(model, args)
    if group == "infer":
        model.eval()
        model_input = ModelInput(args.device)

        def infer(data=fixed):
            with torch.no_grad(), sdpa_context(args), autocast(args.device, args.amp_dtype):
                run(model_input(data[0]))
        return infer

    model.train()
    stepper = Stepper(run, make_optimizer(model, batch, pretrain), None, grad_scaler(args.device, args.amp_dtype),
                      Namespace(update_freq=1, clip_grad=None))
    compute_loss = training_loss(group if pretrain else "finetune", model, run, args)

    def train(data=fixed):
        with sdpa_context(args):
            loss = compute_loss(data)
            stepper(loss, 0, 0)
        return loss.detach()
    return train


def step_flops(group, model, args):
    """FLOPs per clip of one step: the forward counted once, x3 for forward + backward."""
    frames, second, _ = make_batch(model, 1, group == "pretrain", args.device)
    inputs = (T.normalize(frames),) + ((second.bool(),) if group == "pretrain" else ())
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

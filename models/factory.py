"""timm registrations, through timm's builder, with pretrained configs. Caller keyword arguments
override the registered defaults.

Fine-tuning and pre-training models take the same names for the same things (``num_frames``,
``embed_dim``, ``num_heads``, ``img_size``, ``stage_depths``, ...); the release's ``all_frames`` and
``encoder_embed_dim`` / ``encoder_num_heads`` are accepted as well.

Nothing is downloaded: ``pretrained=True`` loads the checkpoint file the caller names,
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``, in any layout
``models.load_pretrained`` reads, with its strict mismatch report (``models.checkpoint.pretrained_filter``).
"""
from functools import partial

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from .checkpoint import pretrained_filter
from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT

PATCH_SIZE = 16  # every registered model's
_COMMON = dict(img_size=160, patch_size=PATCH_SIZE, tubelet_size=2, num_frames=16, mlp_ratio=4.0, qkv_bias=True,
               num_bottleneck_tokens=8, temporal_kernel_size=2)

SVFAP_BASE = dict(_COMMON, embed_dim=512, num_heads=8, stage_depths=(12, 6, 3))
SVFAP_SMALL = dict(_COMMON, embed_dim=384, num_heads=6, stage_depths=(8, 4, 2))
# Not in the paper: a small size for demos, tests and quick experiments on a CPU.
SVFAP_TINY = dict(_COMMON, embed_dim=192, num_heads=3, stage_depths=(4, 2, 2))
VIDEOMAE_BASE = dict(_COMMON, embed_dim=768, num_heads=12, stage_depths=(12,))
DECODER = dict(decoder_embed_dim=384, decoder_num_heads=6, decoder_depth=4)
FINETUNE_CLASSES = 7  # the registered default (DFEW's 7 expressions)


def _cfg(pretrain=False, **kwargs):
    # timm's input_size is (C, H, W) (its builder asserts three values): the clip length, 16
    # frames, is the model's num_frames and is named in the notes.
    return dict(input_size=(3, 160, 160), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=1.0,
                interpolation="bilinear",
                num_classes=0 if pretrain else FINETUNE_CLASSES, classifier=None if pretrain else "head",
                first_conv=("encoder." if pretrain else "") + "patch_embed.proj",
                notes=("clips of 16 frames, (B, 3, 16, 160, 160); weights: pass the checkpoint file "
                       "with pretrained_cfg_overlay=dict(file=PATH)",), **kwargs)


_SVFAP = dict(paper_ids="arXiv:2401.00416", paper_name="SVFAP: Self-supervised Video Facial Affect Perceiver",
              origin_url="https://github.com/sunlicai/SVFAP")
_VIDEOMAE = dict(paper_ids="arXiv:2203.12602", origin_url="https://github.com/MCG-NJU/VideoMAE")
default_cfgs = generate_default_cfgs({
    "svfap_base_patch16_160": _cfg(**_SVFAP),
    "svfap_small_patch16_160": _cfg(**_SVFAP),
    "svfap_tiny_patch16_160": _cfg(),
    "videomae_base_patch16_160": _cfg(**_VIDEOMAE),
    "pretrain_svfap_base_patch16_160": _cfg(pretrain=True, **_SVFAP),
    "pretrain_svfap_small_patch16_160": _cfg(pretrain=True, **_SVFAP),
    "pretrain_svfap_tiny_patch16_160": _cfg(pretrain=True),
    "pretrain_videomae_base_patch16_160": _cfg(pretrain=True, **_VIDEOMAE),
})

MODEL_NAMES = []  # every model registered below, in order


def _register(fn):
    MODEL_NAMES.append(fn.__name__)
    return register_model(fn)


def _pretrained_cfg(variant, pretrained, kwargs):
    """The resolved pretrained config. A checkpoint file goes to the model's ``load_pretrained``
    (timm's ``custom_load``): release files pickle more than timm's reader allows, and a
    transformers folder is no file."""
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    cfg = resolve_pretrained_cfg(variant, kwargs.pop("pretrained_cfg", None), overlay)
    if cfg.file and "custom_load" not in overlay:
        cfg.custom_load = True
    if pretrained and not (cfg.file or cfg.state_dict or cfg.url or cfg.hf_hub_id):
        raise ValueError(f"{variant}: no weights are downloaded; pass the checkpoint file: timm.create_model("
                         f"{variant!r}, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))")
    return cfg


def _build(cls, variant, defaults, pretrained, kwargs):
    cfg = _pretrained_cfg(variant, pretrained, kwargs)
    if "norm_eps" in kwargs:  # convenience for configs that state the LayerNorm eps
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("norm_eps"))
    kwargs = {**defaults, **kwargs}
    # The masked autoencoder has no classifier: its config's num_classes (0) is not an argument.
    drop = ("num_classes",) if cls is PretrainTPSBT and "num_classes" not in kwargs else None
    model = build_model_with_cfg(cls, variant, pretrained, pretrained_cfg=cfg, pretrained_filter_fn=pretrained_filter,
                                 kwargs_filter=drop, **kwargs)
    # The input a data pipeline must produce is the one this model was built for.
    embed = model.encoder.patch_embed if cls is PretrainTPSBT else model.patch_embed
    model.pretrained_cfg["input_size"] = (embed.proj.in_channels, *embed.img_size)
    return model


def _finetune(variant, defaults, pretrained, kwargs):
    return _build(TPSBT, variant, {"num_classes": FINETUNE_CLASSES, **defaults}, pretrained, kwargs)


def _pretrain(variant, defaults, pretrained, kwargs, decoder=DECODER):
    return _build(PretrainTPSBT, variant, {**defaults, **decoder}, pretrained, kwargs)


@_register
def svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B: TPSBT 512 wide, 8 heads, stages 12-6-3, 8 bottleneck tokens."""
    return _finetune("svfap_base_patch16_160", SVFAP_BASE, pretrained, kwargs)


@_register
def svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S: TPSBT 384 wide, 6 heads, stages 8-4-2, 8 bottleneck tokens."""
    return _finetune("svfap_small_patch16_160", SVFAP_SMALL, pretrained, kwargs)


@_register
def svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: TPSBT 192 wide, 3 heads, stages 4-2-2, for demos and CPU experiments."""
    return _finetune("svfap_tiny_patch16_160", SVFAP_TINY, pretrained, kwargs)


@_register
def videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B baseline (768 wide, 12 heads, 12 blocks, one stage) at 16x160x160."""
    return _finetune("videomae_base_patch16_160", VIDEOMAE_BASE, pretrained, kwargs)


@_register
def pretrain_svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain("pretrain_svfap_base_patch16_160", SVFAP_BASE, pretrained, kwargs)


@_register
def pretrain_svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain("pretrain_svfap_small_patch16_160", SVFAP_SMALL, pretrained, kwargs)


@_register
def pretrain_svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: the tiny encoder with a 192-wide, 3-head, depth-2 decoder."""
    return _pretrain("pretrain_svfap_tiny_patch16_160", SVFAP_TINY, pretrained, kwargs,
                     decoder=dict(decoder_embed_dim=192, decoder_num_heads=3, decoder_depth=2))


@_register
def pretrain_videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B masked autoencoder baseline; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain("pretrain_videomae_base_patch16_160", VIDEOMAE_BASE, pretrained, kwargs)


class UnknownModelError(ValueError):
    """A model name that is not registered."""


def create_model(name, **kwargs):
    """``timm.create_model`` of a registered model; an unknown name lists the known ones."""
    import timm
    if not timm.is_model(name):
        raise UnknownModelError(f"unknown model {name!r}; registered: {', '.join(MODEL_NAMES)}")
    return timm.create_model(name, **kwargs)


def finetune_name(name):
    return name[len("pretrain_"):] if name.startswith("pretrain_") else name


def pretrain_name(name):
    return name if name.startswith("pretrain_") else "pretrain_" + name


# Option names of the entry points (and checkpoints' args) -> constructor keywords.
_CONFIG = {"input_size": "img_size", "num_frames": "num_frames", "tubelet_size": "tubelet_size",
           "stage_depths": "stage_depths", "num_bottleneck_tokens": "num_bottleneck_tokens",
           "temporal_kernel_size": "temporal_kernel_size", "embed_dim": "embed_dim", "num_heads": "num_heads"}
_PRETRAIN_ONLY = ("decoder_depth", "decoder_embed_dim", "decoder_num_heads")
_FINETUNE_ONLY = ("use_mean_pooling", "keep_temporal_dim")


def config_kwargs(config, pretrain=False):
    """Constructor keywords for a configuration given in option names (unset ones keep the
    registered defaults)."""
    names = {**_CONFIG, **{k: k for k in (_PRETRAIN_ONLY if pretrain else _FINETUNE_ONLY)}}
    return {arg: config[key] for key, arg in names.items() if config.get(key) is not None}

"""timm registrations. Caller keyword arguments override the registered defaults.

Fine-tuning and pre-training models take the same names for the same things (``num_frames``,
``embed_dim``, ``num_heads``, ``img_size``, ``stage_depths``, ...); the release's ``all_frames`` and
``encoder_embed_dim`` / ``encoder_num_heads`` are accepted as well.
"""
from functools import partial

import torch.nn as nn
from timm.models import register_model

from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")

PATCH_SIZE = 16  # every registered model's
_COMMON = dict(img_size=160, patch_size=PATCH_SIZE, tubelet_size=2, num_frames=16, mlp_ratio=4.0, qkv_bias=True,
               num_bottleneck_tokens=8, temporal_kernel_size=2)

SVFAP_BASE = dict(_COMMON, embed_dim=512, num_heads=8, stage_depths=(12, 6, 3))
SVFAP_SMALL = dict(_COMMON, embed_dim=384, num_heads=6, stage_depths=(8, 4, 2))
# Not in the paper: a small size for demos, tests and quick experiments on a CPU.
SVFAP_TINY = dict(_COMMON, embed_dim=192, num_heads=3, stage_depths=(4, 2, 2))
VIDEOMAE_BASE = dict(_COMMON, embed_dim=768, num_heads=12, stage_depths=(12,))
DECODER = dict(decoder_embed_dim=384, decoder_num_heads=6, decoder_depth=4)

MODEL_NAMES = []  # every model registered below, in order


def _register(fn):
    MODEL_NAMES.append(fn.__name__)
    return register_model(fn)


def _build(cls, defaults, pretrained, kwargs):
    if pretrained:
        raise ValueError("no weights are downloaded: build the model, then load a checkpoint file with "
                         "models.load_pretrained (or --finetune in run_finetune.py)")
    for key in _TIMM_ONLY:
        kwargs.pop(key, None)
    if "norm_eps" in kwargs:  # convenience for configs that state the LayerNorm eps
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("norm_eps"))
    return cls(**{**defaults, **kwargs})


def _finetune(defaults, pretrained, kwargs):
    return _build(TPSBT, {"num_classes": 7, **defaults}, pretrained, kwargs)


def _pretrain(defaults, pretrained, kwargs, decoder=DECODER):
    return _build(PretrainTPSBT, {**defaults, **decoder}, pretrained, kwargs)


@_register
def svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B: TPSBT 512 wide, 8 heads, stages 12-6-3, 8 bottleneck tokens."""
    return _finetune(SVFAP_BASE, pretrained, kwargs)


@_register
def svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S: TPSBT 384 wide, 6 heads, stages 8-4-2, 8 bottleneck tokens."""
    return _finetune(SVFAP_SMALL, pretrained, kwargs)


@_register
def svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: TPSBT 192 wide, 3 heads, stages 4-2-2, for demos and CPU experiments."""
    return _finetune(SVFAP_TINY, pretrained, kwargs)


@_register
def videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B baseline (768 wide, 12 heads, 12 blocks, one stage) at 16x160x160."""
    return _finetune(VIDEOMAE_BASE, pretrained, kwargs)


@_register
def pretrain_svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(SVFAP_BASE, pretrained, kwargs)


@_register
def pretrain_svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(SVFAP_SMALL, pretrained, kwargs)


@_register
def pretrain_svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: the tiny encoder with a 192-wide, 3-head, depth-2 decoder."""
    return _pretrain(SVFAP_TINY, pretrained, kwargs,
                     decoder=dict(decoder_embed_dim=192, decoder_num_heads=3, decoder_depth=2))


@_register
def pretrain_videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B masked autoencoder baseline; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(VIDEOMAE_BASE, pretrained, kwargs)


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

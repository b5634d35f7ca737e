"""timm registrations. Caller keyword arguments override the registered defaults."""
from timm.models import register_model

from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")

_COMMON = dict(img_size=160, patch_size=16, tubelet_size=2, mlp_ratio=4.0, qkv_bias=True,
               num_bottleneck_tokens=8, temporal_kernel_size=2)

SVFAP_BASE = dict(_COMMON, embed_dim=512, num_heads=8, stage_depths=(12, 6, 3))
SVFAP_SMALL = dict(_COMMON, embed_dim=384, num_heads=6, stage_depths=(8, 4, 2))
# Not in the paper: a small size for demos, tests and quick experiments on a CPU.
SVFAP_TINY = dict(_COMMON, embed_dim=192, num_heads=3, stage_depths=(4, 2, 2))
VIDEOMAE_BASE = dict(_COMMON, embed_dim=768, num_heads=12, stage_depths=(12,))


def _build(cls, defaults, pretrained, kwargs):
    if pretrained:
        raise ValueError("no weights are downloaded: build the model, then load a checkpoint file with "
                         "models.load_pretrained (or --finetune in run_finetune.py)")
    for key in _TIMM_ONLY:
        kwargs.pop(key, None)
    if "norm_eps" in kwargs:  # convenience for configs that state the LayerNorm eps
        from functools import partial
        import torch.nn as nn
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("norm_eps"))
    return cls(**{**defaults, **kwargs})


def _finetune(defaults, pretrained, kwargs):
    return _build(TPSBT, {"num_classes": 7, "all_frames": 16, **defaults}, pretrained, kwargs)


def _pretrain(defaults, pretrained, kwargs, decoder_embed_dim=384, decoder_num_heads=6, decoder_depth=4):
    enc = {("encoder_" + k if k in ("embed_dim", "num_heads") else k): v for k, v in defaults.items()}
    dec = dict(decoder_embed_dim=decoder_embed_dim, decoder_num_heads=decoder_num_heads, decoder_depth=decoder_depth,
               num_frames=16)
    return _build(PretrainTPSBT, {**enc, **dec}, pretrained, kwargs)


@register_model
def svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B: TPSBT 512 wide, 8 heads, stages 12-6-3, 8 bottleneck tokens."""
    return _finetune(SVFAP_BASE, pretrained, kwargs)


@register_model
def svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S: TPSBT 384 wide, 6 heads, stages 8-4-2, 8 bottleneck tokens."""
    return _finetune(SVFAP_SMALL, pretrained, kwargs)


@register_model
def svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: TPSBT 192 wide, 3 heads, stages 4-2-2, for demos and CPU experiments."""
    return _finetune(SVFAP_TINY, pretrained, kwargs)


@register_model
def videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B baseline (768 wide, 12 heads, 12 blocks, one stage) at 16x160x160."""
    return _finetune(VIDEOMAE_BASE, pretrained, kwargs)


@register_model
def pretrain_svfap_base_patch16_160(pretrained=False, **kwargs):
    """SVFAP-B masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(SVFAP_BASE, pretrained, kwargs)


@register_model
def pretrain_svfap_small_patch16_160(pretrained=False, **kwargs):
    """SVFAP-S masked autoencoder; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(SVFAP_SMALL, pretrained, kwargs)


@register_model
def pretrain_svfap_tiny_patch16_160(pretrained=False, **kwargs):
    """Not in the paper: the tiny encoder with a 192-wide, 3-head, depth-2 decoder."""
    return _pretrain(SVFAP_TINY, pretrained, kwargs, decoder_embed_dim=192, decoder_num_heads=3, decoder_depth=2)


@register_model
def pretrain_videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B masked autoencoder baseline; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain(VIDEOMAE_BASE, pretrained, kwargs)


MODEL_NAMES = ["svfap_base_patch16_160", "svfap_small_patch16_160", "svfap_tiny_patch16_160",
               "videomae_base_patch16_160", "pretrain_svfap_base_patch16_160", "pretrain_svfap_small_patch16_160",
               "pretrain_svfap_tiny_patch16_160", "pretrain_videomae_base_patch16_160"]

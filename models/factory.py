"""The builder and registry: timm registrations with pretrained configs, through timm's builder.
Caller keyword arguments override the registered defaults.

Fine-tuning and pre-training models take the same names for the same things (``num_frames``,
``embed_dim``, ``num_heads``, ``img_size``, ``stage_depths``, ...); the release's ``all_frames`` and
``encoder_embed_dim`` / ``encoder_num_heads`` are accepted as well.

Nothing is downloaded. ``pretrained=True`` loads the checkpoint file the caller names,
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``, in any layout
``models.load_pretrained`` reads, with its strict mismatch report; this builder reads the file
itself (``models.keymap``), so the model classes need no loading hooks. The tagged configs
(``svfap_base_patch16_160.voxceleb2_ft_dfew_fold1``, ...) are the release's files: where each is
published is in its ``notes``; download it and pass it as ``file``.
"""
from functools import partial

import timm
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import FeatureGetterNet

from .keymap import checkpoint_filter_fn, read_checkpoint
from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT
from .variants import DECODER, FINETUNE_CLASSES, SVFAP_BASE, SVFAP_SMALL, SVFAP_TINY, TINY_DECODER, VIDEOMAE_BASE


class UnknownModelError(ValueError):
    """A model ``name`` that is not registered."""
    user_error = True

    def __init__(self, name):
        self.name = name
        super().__init__(f"unknown model {name!r}; registered: {', '.join(MODEL_NAMES)}")


class NoWeightsError(ValueError):
    """``pretrained=True`` without a checkpoint file: nothing is downloaded (``published``: where
    the release's file is, if it has one)."""
    user_error = True

    def __init__(self, name, published=None):
        self.name, self.published = name, published
        where = f"the release's file is published at {published}; download it and " if published else ""
        super().__init__(f"{name}: no weights are downloaded; {where}pass the checkpoint file: timm.create_model("
                         f"{name!r}, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))")


def _cfg(pretrain=False, num_classes=FINETUNE_CLASSES, **kwargs):
    # timm's input_size is (C, H, W) (its builder asserts three values): the clip length, 16
    # frames, is the model's num_frames and is named in the notes.
    notes = ("clips of 16 frames, (B, 3, 16, 160, 160)",) + tuple(kwargs.pop("notes", ()))
    return dict(input_size=(3, 160, 160), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=1.0,
                interpolation="bilinear",
                num_classes=0 if pretrain else num_classes, classifier=None if pretrain else "head",
                first_conv=("encoder." if pretrain else "") + "patch_embed.proj", notes=notes, **kwargs)


_SVFAP = dict(paper_ids="arXiv:2401.00416", paper_name="SVFAP: Self-supervised Video Facial Affect Perceiver",
              origin_url="https://github.com/sunlicai/SVFAP")
_VIDEOMAE = dict(paper_ids="arXiv:2203.12602", origin_url="https://github.com/MCG-NJU/VideoMAE")

# The release's files (its README): the VoxCeleb2 pre-training checkpoint, and the fine-tuned ones.
_SHARE = "https://unioulu-my.sharepoint.com/:u:/g/personal/lsun24_univ_yo_oulu_fi/"
PUBLISHED = {
    "voxceleb2": _SHARE + "EUhhmb_5-ltMt7P7pjm3D1IBkdREeGnOrAW4kGrfEZSFxA?e=Iqarze",
    "dfew_fold1": _SHARE + "EXEnKAHX2ZxPrWvUAJ9Glg0B6GuYbw8ox9Zs3jn7lJ7jJA?e=ffXMQK",
    "dfew_fold2": _SHARE + "EfkLBkkmGqpPigAzL_S_FFABfuOShaNkrlcsSJLFrw2nHw?e=mKagKP",
    "dfew_fold3": _SHARE + "ESbBQRwY--9Iuah3lUuuglkBwwkevZF4ftGKEDMO-HhxUA?e=3C2rkm",
    "dfew_fold4": _SHARE + "EaOR9NCzaYVNuqop89cNI94BlqrzeiRmXP-amDL2tTCw5g?e=obLurU",
    "dfew_fold5": _SHARE + "EUDW_x4ly-hNlUs-PhSqKMMBRnP1ku16eu--dS9KrgeT6Q?e=I4VlyF",
    "ferv39k": _SHARE + "EeiFyC-HLaBAntblXgeOt5sBB5KJJttxbQn7iMlotUvX2A?e=OqqIST",
    "mafw_fold1": _SHARE + "EYdknPrtbo1Mt1NYjUqJtsIBVzBCPIU-HPPwhCcuvUg1hA?e=bKnU4U",
    "mafw_fold2": _SHARE + "EUWnPxO1gbNInVOeFaUPL8EBzfPvfWKaxidusQv8_J6h2Q?e=853E0o",
    "mafw_fold3": _SHARE + "Eftx7YovMn9Mqn6FwfsQFdoBCFBxDu4fSWnw9307Xs_OBA?e=F0r91e",
    "mafw_fold4": _SHARE + "EaBj2GjlldBKt8kwxeve01QBOISd2PuvR16CLT2GOVZ7Ww?e=aofdJD",
    "mafw_fold5": _SHARE + "ET1EUbbzVABKlko3ibr2zNoBq1_h7UvQ_WP4-jhtH1M-SQ?e=vLzP80",
}
# (dataset, classes, frame stride of its recipe) of each fine-tuned file
_FINETUNED = {**{f"dfew_fold{k}": ("DFEW", 7, 4) for k in range(1, 6)}, "ferv39k": ("FERV39k", 7, 1),
              **{f"mafw_fold{k}": ("MAFW", 11, 4) for k in range(1, 6)}}


def _published(key, what):
    return (f"weights: {what}, the release's {key} file, published at {PUBLISHED[key]} (not downloaded: pass the "
            f"file with pretrained_cfg_overlay=dict(file=PATH))",)


def _release_cfgs():
    cfgs = {
        "pretrain_svfap_base_patch16_160.voxceleb2": _cfg(
            pretrain=True, description="SVFAP-B masked autoencoder pre-trained on VoxCeleb2 (100 epochs)",
            notes=_published("voxceleb2", "the pre-trained encoder and decoder"), **_SVFAP),
        # The pre-trained encoder in the fine-tuning model: no classifier unless num_classes is given.
        "svfap_base_patch16_160.voxceleb2": _cfg(
            num_classes=0, description="SVFAP-B encoder pre-trained on VoxCeleb2 (a new head to fine-tune)",
            notes=_published("voxceleb2", "the pre-trained encoder"), **_SVFAP),
    }
    for key, (data_set, classes, stride) in _FINETUNED.items():
        fold = f", fold {key[-1]}" if "fold" in key else ""
        cfgs[f"svfap_base_patch16_160.voxceleb2_ft_{key}"] = _cfg(
            num_classes=classes, description=f"SVFAP-B pre-trained on VoxCeleb2, fine-tuned on {data_set}{fold}",
            notes=(f"{data_set} clips: 16 frames every {stride}", *_published(key, f"fine-tuned on {data_set}{fold}")),
            **_SVFAP)
    return cfgs


default_cfgs = generate_default_cfgs({
    "svfap_base_patch16_160": _cfg(**_SVFAP),
    "svfap_small_patch16_160": _cfg(**_SVFAP),
    "svfap_tiny_patch16_160": _cfg(),
    "videomae_base_patch16_160": _cfg(**_VIDEOMAE),
    "pretrain_svfap_base_patch16_160": _cfg(pretrain=True, **_SVFAP),
    "pretrain_svfap_small_patch16_160": _cfg(pretrain=True, **_SVFAP),
    "pretrain_svfap_tiny_patch16_160": _cfg(pretrain=True),
    "pretrain_videomae_base_patch16_160": _cfg(pretrain=True, **_VIDEOMAE),
    **_release_cfgs(),
})

MODEL_NAMES = []  # every model registered below, in order


def _register(fn):
    MODEL_NAMES.append(fn.__name__)
    return register_model(fn)


class VideoFeatureGetter(FeatureGetterNet):
    """timm's ``features_only`` wrapper around ``forward_intermediates``, with the video layouts
    (``NCTHW``) that timm's image ``Format`` does not know."""

    def __init__(self, model, out_indices, output_fmt="NCTHW"):
        super().__init__(model, out_indices)
        self.output_fmt = output_fmt


def _check_source(cfg, name):
    if cfg.state_dict is None and not cfg.file:
        published = next((PUBLISHED[k] for k in PUBLISHED if cfg.tag and cfg.tag.endswith(k)), None)
        raise NoWeightsError(name + (f".{cfg.tag}" if cfg.tag else ""), published)


def _load_weights(model, cfg):
    """The weights the pretrained config names: a ``file`` (or transformers folder), read as the
    tools read it, or an in-memory ``state_dict``, through :func:`models.keymap.checkpoint_filter_fn`."""
    checkpoint = cfg.state_dict if cfg.state_dict is not None else read_checkpoint(cfg.file)
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model))


def _build(cls, variant, defaults, pretrained, kwargs):
    cfg = resolve_pretrained_cfg(variant, kwargs.pop("pretrained_cfg", None),
                                 kwargs.pop("pretrained_cfg_overlay", None))
    if pretrained:
        _check_source(cfg, variant)
    features = kwargs.pop("features_only", False)
    feature_cfg = dict(out_indices=kwargs.pop("out_indices", None), output_fmt=kwargs.pop("output_fmt", "NCTHW"))
    if "norm_eps" in kwargs:  # convenience for configs that state the LayerNorm eps
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("norm_eps"))
    kwargs = {**defaults, **kwargs}
    if cls is TPSBT:  # a tagged config's classes (0 for a pre-trained encoder) unless the caller says
        kwargs.setdefault("num_classes", cfg.num_classes)
    # The masked autoencoder has no classifier: its config's num_classes (0) is not an argument.
    drop = ("num_classes",) if cls is PretrainTPSBT and "num_classes" not in kwargs else None
    model = build_model_with_cfg(cls, variant, False, pretrained_cfg=cfg, kwargs_filter=drop, **kwargs)
    if pretrained:
        _load_weights(model, cfg)
    # The input a data pipeline must produce is the one this model was built for.
    embed = model.encoder.patch_embed if cls is PretrainTPSBT else model.patch_embed
    model.pretrained_cfg["input_size"] = (embed.proj.in_channels, *embed.img_size)
    if features:
        if cls is PretrainTPSBT:
            raise ValueError(f"{variant}: features_only needs a fine-tuning model (its stages' tokens)")
        cfg_dict = model.pretrained_cfg
        model = VideoFeatureGetter(model, **feature_cfg)
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg_dict)
    return model


def _finetune(variant, defaults, pretrained, kwargs):
    return _build(TPSBT, variant, defaults, pretrained, kwargs)


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
    return _pretrain("pretrain_svfap_tiny_patch16_160", SVFAP_TINY, pretrained, kwargs, decoder=TINY_DECODER)


@_register
def pretrain_videomae_base_patch16_160(pretrained=False, **kwargs):
    """VideoMAE ViT-B masked autoencoder baseline; decoder 384 wide, 6 heads, depth 4."""
    return _pretrain("pretrain_videomae_base_patch16_160", VIDEOMAE_BASE, pretrained, kwargs)


def create_model(name, **kwargs):
    """``timm.create_model`` of a registered model; an unknown name lists the known ones."""
    if not timm.is_model(name):
        raise UnknownModelError(name)
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

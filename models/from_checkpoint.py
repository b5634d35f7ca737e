"""The top of models/: a model as its checkpoint records it (the configuration in its ``args``,
reconciled with what the caller states), built by the registry and loaded strictly, linear/LoRA
checkpoints completed from their backbone file."""
import os

from timm.models import clean_state_dict

from ._helpers import DEFAULT_MODEL_KEY, CheckpointMismatchError, checkpoint_args, extract_state_dict, \
    load_checkpoint_file, load_strict
from .factory import MODEL_NAMES, config_kwargs, create_model, finetune_name, pretrain_name
from .keymap import is_pretrain_state, load_pretrained, project_state, read_checkpoint, to_finetune_keys
from .tuning import Tuning, apply_tuning, find_backbone, is_tuned_checkpoint, load_model_state

# What a checkpoint's ``args`` say about its model, its clips and its outputs: using it with other
# values gives other numbers without any error.
MODEL_KEYS = ("model", "input_size", "num_frames", "tubelet_size", "stage_depths", "num_bottleneck_tokens",
              "temporal_kernel_size", "embed_dim", "num_heads", "use_mean_pooling", "keep_temporal_dim",
              "decoder_depth", "decoder_embed_dim", "decoder_num_heads")
CLIP_KEYS = ("sampling_rate", "short_side_size", "frame_resize")
OUTPUT_KEYS = ("data_set", "nb_classes", "task", "num_targets", "class_names")


class ConfigConflictError(CheckpointMismatchError):
    """Stated values that disagree with the checkpoint's: ``conflicts`` = ``{key: (stated, recorded)}``."""
    advice = "config_conflict"

    def __init__(self, conflicts):
        self.conflicts = dict(conflicts)
        super().__init__("values that disagree with the checkpoint: " + "; ".join(
            f"{k} {mine} (the checkpoint records {value})" for k, (mine, value) in self.conflicts.items()))


class CheckpointKindError(CheckpointMismatchError):
    """A checkpoint of another kind than asked for: ``found`` (``pretrain``: a masked autoencoder;
    ``finetune``: a fine-tuned model; ``no_classifier``: one without a classifier), ``wanted``
    (``classifier`` or ``pretrain``)."""
    advice = "checkpoint_kind"

    def __init__(self, message, found, wanted):
        super().__init__(message, found=found, wanted=wanted)


class OutputsMismatchError(CheckpointMismatchError):
    """The classifier has ``found`` outputs where ``configured`` were stated or recorded."""
    advice = "outputs"

    def __init__(self, configured, found):
        self.configured, self.found = configured, found
        super().__init__(f"{configured} outputs are stated or recorded, but the checkpoint's classifier has {found}")


def _same(key, a, b):
    if key == "model":
        return finetune_name(a) == finetune_name(b)
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def checkpoint_config(recorded, given, force=False, keys=MODEL_KEYS + CLIP_KEYS + OUTPUT_KEYS):
    """``(config, adopted)`` for ``keys``: what the checkpoint ``recorded``, except where the caller
    ``given`` a value (``{key: value}`` of what was stated).

    A stated value that disagrees with the checkpoint is a :class:`ConfigConflictError` listing
    each one, unless ``force`` (the stated value then wins). ``adopted`` is what came from the
    checkpoint alone. A model name that is not one of ours (the release's or VideoMAE's own, e.g. timm's
    ``vit_base_patch16_224``) is ignored (the stated one decides).
    """
    config, adopted, conflicts = {}, {}, {}
    for key in keys:
        value, mine = recorded.get(key), given.get(key)
        # Not timm.is_model: VideoMAE's files name timm's own vit_base_patch16_224.
        if key == "model" and value is not None and finetune_name(value) not in MODEL_NAMES:
            value = None
        if value is None or mine is None:
            if value is not None:
                adopted[key] = value
            if mine is not None or value is not None:
                config[key] = mine if mine is not None else value
        elif _same(key, value, mine) or force:
            config[key] = mine
        else:
            conflicts[key] = (mine, value)
    if conflicts:
        raise ConfigConflictError(conflicts)
    return config, adopted


def guess_model(state_dict):
    """The fine-tuning model a state dict's structure points to when its ``args`` name none of
    ours (the original VideoMAE's files name timm-style ViTs): one plain stage is VideoMAE's ViT-B."""
    staged = any(".cross_attn." in k or "downsamples." in k for k in state_dict)
    return "svfap_base_patch16_160" if staged else "videomae_base_patch16_160"


def load_tuned(model, checkpoint, backbone=None, verbose=False):
    """Fill a freshly built fine-tuning ``model`` from a tuned ``checkpoint``: the backbone file
    (found and verified), the checkpoint's mode applied, its trained tensors. ``backbone``: where
    the backbone file is now, if it moved."""
    reference = checkpoint["backbone"]
    path = find_backbone(reference, backbone)
    model_key = reference.get("model_key") or DEFAULT_MODEL_KEY
    load_pretrained(model, load_checkpoint_file(path), model_key=model_key, verbose=verbose)
    apply_tuning(model, Tuning(**checkpoint["tuning"]), {**reference, "path": os.path.abspath(path)})
    return load_model_state(model, extract_state_dict(checkpoint))


def model_from_checkpoint(checkpoint, given=None, force=False, kind="any", backbone=None):
    """``(model, config)``: the model a checkpoint file (or loaded dict) records, loaded strictly
    (``config["model"]`` is the name built).

    ``kind``: ``classifier`` (a fine-tuned model with its trained head), ``pretrain`` (the masked
    autoencoder with its decoder), or ``any`` (what the file holds). ``given`` and ``force`` as in
    :func:`checkpoint_config`. A linear/LoRA checkpoint (models/tuning.py) is completed from its
    backbone file, found where ``backbone`` (or ``given["backbone"]``) says or at its recorded
    path. The model is in eval mode.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint(checkpoint)
    state = clean_state_dict(project_state(checkpoint))
    config, _ = checkpoint_config(checkpoint_args(checkpoint), given or {}, force)
    name = config.get("model") or guess_model(state)
    if is_pretrain_state(state):
        if kind == "classifier":
            raise CheckpointKindError("this is a pre-training checkpoint (it has a decoder and no classifier), "
                                      "not a fine-tuned one", "pretrain", kind)
        config["model"] = pretrain_name(name)
        model = create_model(config["model"], **config_kwargs(config, pretrain=True))
        return load_strict(model, state, f"pre-training checkpoint ({config['model']})").eval(), config
    if kind == "pretrain":
        raise CheckpointKindError("this checkpoint has no decoder (a fine-tuned model), not a pre-training one",
                                  "finetune", kind)
    state = to_finetune_keys(state)
    head = state.get("head.weight")
    if kind == "classifier" and head is None:
        raise CheckpointKindError("the checkpoint has no classifier weights (head.weight)", "no_classifier", kind)
    outputs = int(head.shape[0]) if head is not None else 0
    if kind == "classifier" and config.get("nb_classes") and int(config["nb_classes"]) != outputs:
        raise OutputsMismatchError(int(config["nb_classes"]), outputs)
    config["model"] = finetune_name(name)
    model = create_model(config["model"], num_classes=outputs, **config_kwargs(config))
    if is_tuned_checkpoint(checkpoint):
        return load_tuned(model, checkpoint, backbone or (given or {}).get("backbone")).eval(), config
    return load_strict(model, state, f"checkpoint ({config['model']})").eval(), config

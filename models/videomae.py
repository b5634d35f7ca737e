"""VideoMAE checkpoints of Hugging Face transformers, mapped onto the project's layout.

The original VideoMAE release names its weights as this project does (``blocks.N.attn.qkv`` with
``q_bias``/``v_bias``, ``fc_norm``, ``head``; ``encoder.``/``decoder.``, ``encoder_to_decoder`` and
``mask_token`` in pre-training files), so its files need no mapping. transformers splits ``qkv``
into ``query``/``key``/``value`` and renames the rest; this module maps such state dicts (and
``save_pretrained`` folders) back: ``VideoMAEForPreTraining`` to the ``pretrain_`` layout,
``VideoMAEForVideoClassification`` and ``VideoMAEModel`` to the fine-tuning layout. Neither
family stores its fixed sinusoid position table, so only the weights' shapes tie a file to a
model; the clip size and frames it was trained on travel in the config.
"""
import json
import os
import re
from collections import OrderedDict

import torch
from safetensors.torch import load_file
from timm.models import clean_state_dict

from ._helpers import CheckpointMismatchError, CheckpointReadError, load_checkpoint_file
from .variants import PATCH_SIZE

# transformers' VideoMAEConfig defaults, for config.json files that leave a value out.
CONFIG_DEFAULTS = dict(image_size=224, patch_size=16, num_channels=3, num_frames=16, tubelet_size=2,
                       hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       hidden_act="gelu", layer_norm_eps=1e-12, use_mean_pooling=True,
                       decoder_num_attention_heads=6, decoder_hidden_size=384, decoder_num_hidden_layers=4)
PRETRAINING, CLASSIFIER, BACKBONE = "VideoMAEForPreTraining", "VideoMAEForVideoClassification", "VideoMAEModel"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

_LAYER = re.compile(r"^(?:videomae\.)?encoder\.layer\.(\d+)\.(.+)$")
_DECODER_LAYER = re.compile(r"^decoder\.decoder_layers\.(\d+)\.(.+)$")
_QKV = re.compile(r"^attention\.attention\.(query|key|value)\.weight$")
# Inside a layer. The q and v biases are ``query.bias``/``value.bias`` in the modules and
# ``q_bias``/``v_bias`` in the files transformers writes (its own conversion renames them on load).
_IN_LAYER = {
    "attention.attention.query.bias": "attn.q_bias", "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias", "attention.attention.v_bias": "attn.v_bias",
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight", "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight", "output.dense.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
}
_ENCODER = {"embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
            "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
            "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
_HEADS = {"fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
          "classifier.weight": "head.weight", "classifier.bias": "head.bias"}
_PRETRAIN_SAME = ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight", "decoder.norm.bias",
                  "decoder.head.weight", "decoder.head.bias")


def is_transformers_state(state_dict):
    """Whether a state dict is in transformers' VideoMAE layout."""
    return any(k.startswith(("videomae.embeddings.", "embeddings.patch_embeddings.", "decoder.decoder_layers."))
               or _LAYER.match(k) for k in clean_state_dict(state_dict))


def from_transformers(state_dict):
    """transformers' VideoMAE weights → the project's layout (``pretrain_`` layout when they have a decoder).

    q/k/v are joined into ``qkv`` (keys have no bias in either layout); a file saved without q/v
    biases (``qv_bias=False``) gets zero ``q_bias``/``v_bias``, which computes the same. Anything
    without a place in the project's models raises :class:`CheckpointMismatchError`.
    """
    state = clean_state_dict(state_dict)
    pretrain = any(k.startswith(("decoder.decoder_layers.", "encoder_to_decoder.", "mask_token")) for k in state)
    out, qkv, unknown = OrderedDict(), {}, []
    for key, value in state.items():
        target = _target(key, pretrain)
        if target is None:
            unknown.append(key)
        elif isinstance(target, tuple):  # (block prefix, "query" | "key" | "value")
            qkv.setdefault(target[0], {})[target[1]] = value
        else:
            out[target] = value
    if unknown:
        raise CheckpointMismatchError(f"{len(unknown)} weights of this transformers checkpoint have no place in "
                                      f"a VideoMAE model of this project, e.g. {', '.join(unknown[:5])}",
                                      unexpected=unknown)
    _join_qkv(out, qkv)
    proj = out.get(("encoder." if pretrain else "") + "patch_embed.proj.weight")
    if proj is None or proj.ndim != 5:
        raise CheckpointMismatchError("not a VideoMAE video checkpoint: no Conv3d tubelet embedding "
                                      "(embeddings.patch_embeddings.projection)")
    return out


def _target(key, pretrain):
    """Our name for a transformers key; ``(block prefix, part)`` for a split q/k/v weight; None if it has none."""
    encoder = "encoder." if pretrain else ""
    layer = _LAYER.match(key) or _DECODER_LAYER.match(key)
    if layer:
        prefix = f"{encoder}blocks.{layer[1]}." if layer.re is _LAYER else f"decoder.blocks.{layer[1]}."
        part = _QKV.match(layer[2])
        if part:
            return prefix, part[1]
        return prefix + _IN_LAYER[layer[2]] if layer[2] in _IN_LAYER else None
    name = key[len("videomae."):] if key.startswith("videomae.") else key
    if name in _ENCODER:
        return encoder + _ENCODER[name]
    if pretrain:
        return key if key in _PRETRAIN_SAME else None
    return _HEADS.get(key)


def _join_qkv(out, qkv):
    for prefix, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointMismatchError(f"{prefix}: the checkpoint has {sorted(parts)} of query/key/value")
        out[prefix + "attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        width = parts["query"].shape[0]
        for bias in ("attn.q_bias", "attn.v_bias"):
            out.setdefault(prefix + bias, parts["query"].new_zeros(width))


# -- save_pretrained folders ----------------------------------------------------------------------

def is_transformers_folder(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def read_folder(path):
    """A transformers ``save_pretrained`` folder (config.json and the weights) as a checkpoint dict:
    ``{'model': state dict (transformers' keys), 'args': the project's options for it, 'source': ...}``."""
    path = os.fspath(path)
    if not is_transformers_folder(path):
        raise CheckpointReadError(path, "it is a folder but not a transformers save_pretrained folder (no config.json)")
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = {**CONFIG_DEFAULTS, **json.load(f)}
    except (OSError, ValueError) as e:
        raise CheckpointReadError(path, f"config.json: {e}") from e
    check_config(config, path)
    arch = (config.get("architectures") or [BACKBONE])[0]
    return {"model": _read_weights(path), "args": args_from_config(config, arch), "source": f"transformers {arch}"}


def _read_weights(path):
    names = [n for n in WEIGHT_FILES if os.path.isfile(os.path.join(path, n))]
    if not names:
        raise CheckpointReadError(path, f"it has a config.json but none of {', '.join(WEIGHT_FILES)}")
    file = os.path.join(path, names[0])
    try:
        if file.endswith(".bin"):
            return load_checkpoint_file(file)
        if file.endswith(".json"):  # sharded: the index maps each weight to its shard
            with open(file) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(os.path.join(path, shard)).items()}
        return load_file(file)
    except CheckpointReadError:
        raise
    except Exception as e:  # safetensors and json raise several types for cut or foreign files
        raise CheckpointReadError(path, f"the weights: {type(e).__name__}: {e}") from e


def check_config(config, where="config.json"):
    """Refuse what the project's VideoMAE models cannot compute: other architectures, activations,
    patch sizes, channels, non-square frames, and a LayerNorm eps large enough to change results."""
    problems = []
    if config.get("model_type", "videomae") != "videomae":
        problems.append(f"model_type {config['model_type']!r} (not videomae)")
    if config["hidden_act"] != "gelu":
        problems.append(f"hidden_act {config['hidden_act']!r} (the project's blocks use exact GELU)")
    if config["patch_size"] != PATCH_SIZE:
        problems.append(f"patch_size {config['patch_size']} (the project's models use {PATCH_SIZE})")
    if config["num_channels"] != 3:
        problems.append(f"num_channels {config['num_channels']} (RGB clips only)")
    size = config["image_size"]
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        problems.append(f"image_size {size} (square frames only)")
    if config["layer_norm_eps"] > 1e-5:
        problems.append(f"layer_norm_eps {config['layer_norm_eps']} (the project's LayerNorms use 1e-6)")
    problems += _size_problems(config, PATCH_SIZE)
    if problems:
        raise CheckpointMismatchError(f"{where}: this VideoMAE does not fit the project's models: "
                                      + "; ".join(problems), problems=problems)


# Far above any VideoMAE (ViT-g has about 1e9 parameters, 16 x 224^2 clips 1568 tokens): a
# config.json beyond these is damaged or not a video model, and building it would try to allocate
# more memory than any machine has.
MAX_PARAMETERS, MAX_TOKENS = 1e10, 1 << 16


def _size_problems(config, patch):
    problems = []
    sizes = {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                        "num_frames", "tubelet_size")}
    size = config.get("image_size")
    sizes["image_size"] = size[0] if isinstance(size, (list, tuple)) else size
    bad = [k for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        return [f"{k} {sizes[k]!r} (a positive integer)" for k in bad]
    if sizes["image_size"] % patch:
        problems.append(f"image_size {sizes['image_size']} (not a multiple of the patch size {patch})")
    if sizes["num_frames"] % sizes["tubelet_size"]:
        problems.append(f"num_frames {sizes['num_frames']} (not a multiple of tubelet_size {sizes['tubelet_size']})")
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        problems.append(f"hidden_size {sizes['hidden_size']} (not divisible by {sizes['num_attention_heads']} heads)")
    tokens = (sizes["image_size"] // patch) ** 2 * (sizes["num_frames"] // sizes["tubelet_size"])
    width = sizes["hidden_size"]
    params = sizes["num_hidden_layers"] * (4 * width * width + 2 * width * sizes["intermediate_size"]) + tokens * width
    if tokens > MAX_TOKENS or params > MAX_PARAMETERS:
        problems.append(f"sizes that make {params:.3g} parameters and {tokens} tokens a clip (hidden_size {width}, "
                        f"{sizes['num_hidden_layers']} layers, image_size {sizes['image_size']}, num_frames "
                        f"{sizes['num_frames']}): no VideoMAE is that large")
    return problems


def args_from_config(config, arch):
    """The project's options (as run_finetune.py / run_pretrain.py name them) for a VideoMAE config."""
    size = config["image_size"]
    pretrain = arch == PRETRAINING
    args = {"model": ("pretrain_" if pretrain else "") + "videomae_base_patch16_160",
            "input_size": int(size[0] if isinstance(size, (list, tuple)) else size),
            "num_frames": config["num_frames"], "tubelet_size": config["tubelet_size"],
            "embed_dim": config["hidden_size"], "num_heads": config["num_attention_heads"],
            "stage_depths": [config["num_hidden_layers"]]}
    if pretrain:
        args.update(decoder_embed_dim=config["decoder_hidden_size"], decoder_depth=config["decoder_num_hidden_layers"],
                    decoder_num_heads=config["decoder_num_attention_heads"])
    else:
        args["use_mean_pooling"] = bool(config["use_mean_pooling"])
    if arch == CLASSIFIER:
        args["nb_classes"] = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)
    return args

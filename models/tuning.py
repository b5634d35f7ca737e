"""Parameter-efficient fine-tuning of a fine-tuning model (TPSBT): which parameters train, and
checkpoints that hold only those.

Modes (docs/tuning.md has the recipes):

- ``full``: every parameter trains (the paper's recipe); nothing here applies.
- ``linear``: a linear probe. The encoder is frozen and kept in eval mode while training (no
  dropout or drop path in it, nor before the head); the pooled features' ``fc_norm`` and the
  ``head`` train. The
  LayerNorm standardises each pooled vector (the role of the affine-free BatchNorm of MAE's
  probe) and its affine part is a diagonal re-parameterisation of the head, so the probe stays
  linear in the normalised features.
- ``lora``: low-rank adapters (Hugging Face peft) on the self-attention's ``qkv`` and ``proj`` and
  the MLP's ``fc1`` and ``fc2`` of the chosen blocks; ``fc_norm`` and ``head`` train in full. All
  other weights are frozen, biases included (peft's ``bias="none"``, the LoRA paper's choice),
  so the attention's separate ``q_bias``/``v_bias`` keep their pre-trained values. The
  cross-attention of the bottleneck blocks, the temporal downsampling and the bottleneck pooling
  stay frozen; the model keeps its dropout and drop path in training, as in full fine-tuning.

A ``linear`` or ``lora`` checkpoint holds the trained tensors only, with ``tuning`` (the mode and
its options) and ``backbone``: the path, size and sha256 of the ``--finetune`` file the rest of the
model came from. Loading finds that file at its recorded path (or where the user says it moved)
and refuses one whose hash differs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import torch.nn as nn
from timm.models import clean_state_dict

from ._helpers import CheckpointMismatchError, load_strict

TUNING_MODES = ("full", "linear", "lora")
# Modules after the encoder: the (non-mean-pooling) token norm, the pooled features' norm and the
# classifier. They train in every mode.
HEAD_MODULES = ("norm", "fc_norm", "head")
# --lora_targets names -> the Linear inside each block.
LORA_TARGETS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
ADAPTER = "default"  # peft's adapter name: one adapter per model


class BackboneError(CheckpointMismatchError):
    """The backbone file of a linear/LoRA checkpoint at ``path`` is not usable: ``reason`` is
    ``missing`` (not at its recorded path), ``moved_missing`` (not where the caller said it moved),
    ``differs`` (another file: ``sha256`` vs the ``recorded`` reference) or ``other_run`` (the
    model was built on another backbone than the checkpoint's)."""
    advice = "backbone"

    def __init__(self, message, path, reason, sha256=None, recorded=None):
        super().__init__(message, path=path, reason=reason, sha256=sha256, recorded=recorded)


class TuningMismatchError(CheckpointMismatchError):
    """Trained tensors that do not fit a model's tuning ``mode`` (``full``: a tuned checkpoint
    given to a whole model); ``missing`` / ``unexpected`` / ``mismatched`` list them."""
    advice = "tuning"

    def __init__(self, message, mode, missing=(), unexpected=(), mismatched=()):
        super().__init__(message, mode=mode, missing=list(missing), unexpected=list(unexpected),
                         mismatched=list(mismatched))


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What trains: the mode and, for ``lora``, the adapters' rank, alpha, dropout, targets and blocks."""
    mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple = ("qkv", "proj", "fc1", "fc2")
    lora_blocks: str = "all"

    def __post_init__(self):
        if self.mode not in TUNING_MODES:
            raise ValueError(f"tuning must be one of {', '.join(TUNING_MODES)}, not {self.mode!r}")
        targets = tuple(self.lora_targets.replace(",", " ").split()) if isinstance(self.lora_targets, str) \
            else tuple(self.lora_targets)
        object.__setattr__(self, "lora_targets", targets)
        if self.mode == "lora":
            unknown = [t for t in targets if t not in LORA_TARGETS]
            if unknown or not targets:
                raise ValueError(f"lora targets must be some of {', '.join(LORA_TARGETS)}, not {','.join(targets)!r}")
            if self.lora_rank < 1:
                raise ValueError(f"lora rank must be at least 1, not {self.lora_rank}")
            if not 0 <= self.lora_dropout < 1:
                raise ValueError(f"lora dropout must be in [0, 1), not {self.lora_dropout}")
            parse_blocks(self.lora_blocks, None)

    @classmethod
    def from_args(cls, values):
        """From option names (``tuning``, ``lora_rank``, ...) as a run's args record them."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"mode"}
        kw = {k: v for k, v in values.items() if k in fields and v is not None}
        return cls(mode=values.get("tuning") or "full", **kw)

    def record(self):
        """The plain dict a checkpoint keeps under ``tuning`` (``Tuning(**record)`` rebuilds it)."""
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        if self.mode != "lora":
            out = {"mode": self.mode}
        return out


def parse_blocks(spec, depth):
    """``all`` or indices and ranges (``0-11,18``) -> sorted block indices (checked against ``depth``)."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(depth)) if depth is not None else []
    chosen = set()
    for part in spec.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"lora blocks must be 'all' or indices and ranges such as 0-11,18, not {spec!r}")
        chosen.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    if depth is not None and max(chosen) >= depth:
        raise ValueError(f"lora blocks {spec!r}: the model has blocks 0-{depth - 1}")
    return sorted(chosen)


def lora_module_names(model, tuning):
    """Full names of the Linear layers that get adapters."""
    modules = dict(model.named_modules())
    names = []
    for i in parse_blocks(tuning.lora_blocks, len(model.blocks)):
        for target in tuning.lora_targets:
            name = f"blocks.{i}.{LORA_TARGETS[target]}"
            if not isinstance(modules.get(name), nn.Linear):
                raise ValueError(f"{name} is not a Linear layer of this model")
            names.append(name)
    return names


# -- applying a mode -------------------------------------------------------------------------------

def apply_tuning(model, tuning, backbone=None):
    """Freeze ``model`` (a TPSBT) for ``tuning`` and add its adapters, in place; ``backbone`` is the
    reference (:func:`backbone_reference`) its checkpoints will record. Returns ``model``."""
    if tuning.mode == "full":
        return model
    model.requires_grad_(False)
    if tuning.mode == "lora":
        _inject_lora(model, tuning)
    for name in HEAD_MODULES:
        module = getattr(model, name, None)
        if module is not None:
            module.requires_grad_(True)
    if tuning.mode == "linear":
        for module in _encoder_modules(model):
            module.register_forward_pre_hook(_stay_in_eval)
    model.tuning = tuning
    model.tuning_backbone = dict(backbone) if backbone else None
    return model


def _inject_lora(model, tuning):
    import peft  # imported here: it is slow to import and only this mode needs it
    names = lora_module_names(model, tuning)
    config = peft.LoraConfig(r=tuning.lora_rank, lora_alpha=tuning.lora_alpha, lora_dropout=tuning.lora_dropout,
                             target_modules=names, bias="none")
    peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    # timm's BEiT attention applies qkv as F.linear(x, qkv.weight, q/k/v bias) when it has the
    # separate q/v biases, which would skip the adapter; with qkv_bias_separate it calls the
    # module and adds the biases after, the same sum.
    for name in names:
        if name.endswith(".attn.qkv"):
            model.get_submodule(name[:-len(".qkv")]).qkv_bias_separate = True


def _encoder_modules(model):
    for name, child in model.named_children():
        if name not in HEAD_MODULES:
            yield from child.modules()


def _stay_in_eval(module, inputs):
    """Forward pre-hook on every module of a linear probe's encoder: ``model.train()`` switches
    them all on; the first call of each (by ``model(x)`` or ``model.forward_features(x)``) puts it
    and what it contains back in eval mode."""
    if module.training:
        module.eval()


def tuning_of(model):
    tuning = getattr(model, "tuning", None)
    return tuning if tuning is not None and tuning.mode != "full" else None


def parameter_counts(model):
    """``(trainable, total)`` parameters (LoRA's included in both)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def is_trained(key, tuning):
    """Whether state-dict entry ``key`` is one that ``tuning`` trains (and its checkpoints hold)."""
    if key.split(".", 1)[0] in HEAD_MODULES:
        return True
    return tuning.mode == "lora" and (".lora_A." in key or ".lora_B." in key)


# -- state dicts and checkpoints -----------------------------------------------------------------------

def model_state(model):
    """What a checkpoint keeps of ``model``: every tensor, or only the trained ones of a tuned model."""
    tuning = tuning_of(model)
    state = model.state_dict()
    if tuning is None:
        return state
    return type(state)((k, v) for k, v in state.items() if is_trained(k, tuning))


def checkpoint_record(model):
    """The keys a tuned model's checkpoints carry besides its tensors (none for full fine-tuning)."""
    tuning = tuning_of(model)
    if tuning is None:
        return {}
    return {"tuning": tuning.record(), "backbone": model.tuning_backbone}


def is_tuned_checkpoint(checkpoint):
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get("tuning"), dict) and "backbone" in checkpoint


def load_model_state(model, state):
    """Load what :func:`model_state` saved: the whole model strictly, or exactly the trained
    tensors of a tuned one (keys of a DDP or torch.compile wrapper taken as the model's)."""
    state = clean_state_dict(state)
    tuning = tuning_of(model)
    if tuning is None:
        # A tuned run's file holds the head (and LoRA) tensors only; a whole model, fine-tuning's
        # (``blocks.``) or pre-training's (``encoder.blocks.``), holds more.
        if any(".lora_" in k for k in state) or all(k.split(".", 1)[0] in HEAD_MODULES for k in state):
            raise TuningMismatchError("this checkpoint holds only the trained part of a linear/LoRA run; "
                                      "the model here is fully fine-tuned", "full")
        return load_strict(model, state)
    own = model_state(model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise TuningMismatchError(
            f"the checkpoint's trained tensors do not fit this {tuning.mode} model: "
            + "; ".join(f"{len(v)} {n}, e.g. {', '.join(v[:3])}"
                        for n, v in (("missing", missing), ("unexpected", unexpected), ("mismatched", shapes)) if v),
            tuning.mode, missing, unexpected, shapes)
    model.load_state_dict(state, strict=False)
    return model


# -- the backbone file -----------------------------------------------------------------------------------

_HASHES = {}


def sha256_file(path):
    """sha256 of a file, remembered per (path, size, modification time) for this process."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        with open(path, "rb") as f:
            _HASHES[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASHES[key]


def backbone_reference(path, model_key="model|module|state_dict"):
    """What a tuned checkpoint records of the file its frozen weights come from."""
    path = os.path.abspath(os.fspath(path))
    return {"path": path, "bytes": os.path.getsize(path), "sha256": sha256_file(path), "model_key": model_key}


def find_backbone(reference, moved_to=None):
    """The backbone file of a tuned checkpoint: at ``moved_to`` if given, else at its recorded path;
    its sha256 must be the recorded one."""
    path = os.fspath(moved_to) if moved_to else reference["path"]
    if not os.path.isfile(path):
        if moved_to:
            raise BackboneError(f"the backbone file {path}: no such file", path, "moved_missing", recorded=reference)
        raise BackboneError(f"the backbone file of this linear/LoRA checkpoint is no longer at its recorded path "
                            f"{path}", path, "missing", recorded=reference)
    digest = sha256_file(path)
    if digest != reference["sha256"]:
        raise BackboneError(f"the backbone file {path} is not the one this checkpoint was trained on "
                            f"(sha256 {digest[:16]}..., recorded {reference['sha256'][:16]}... for "
                            f"{reference['path']}); its trained part only fits that file", path, "differs", digest,
                            reference)
    return path


def same_backbone(checkpoint, model):
    """Whether a tuned ``checkpoint`` records the backbone ``model`` was built on; a different one
    is a :class:`BackboneError`. False when either side records none."""
    mine = getattr(model, "tuning_backbone", None) if tuning_of(model) is not None else None
    theirs = checkpoint.get("backbone") if is_tuned_checkpoint(checkpoint) else None
    if not mine or not theirs:
        return False
    if mine["sha256"] != theirs["sha256"]:
        raise BackboneError(f"{mine['path']} is not the backbone this run was trained on "
                            f"(sha256 {mine['sha256'][:16]}..., the checkpoint records {theirs['sha256'][:16]}... "
                            f"for {theirs['path']})", mine["path"], "other_run", mine["sha256"], theirs)
    return True


def merge_tuning(model):
    """Turn a tuned model into a plain one, in place: LoRA weights merged into their layers (peft's
    merge), every parameter trainable again, no tuning record. Returns ``model``."""
    tuning = tuning_of(model)
    if tuning is None:
        return model
    if tuning.mode == "lora":
        from peft.tuners.tuners_utils import BaseTunerLayer
        for name, module in list(model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge(safe_merge=True)
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
                if child == "qkv":
                    model.get_submodule(parent).qkv_bias_separate = False
        if hasattr(model, "peft_config"):
            del model.peft_config
    for module in model.modules():  # the linear probe's hooks, registered without keeping handles
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _stay_in_eval:
                del module._forward_pre_hooks[key]
    model.requires_grad_(True)
    model.tuning = None
    model.tuning_backbone = None
    return model

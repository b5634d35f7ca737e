"""Tuning modes (models/tuning.py): what trains in a real optimisation step, the adapters in the
forward pass, merging, the size of an adapter checkpoint, and loading one over its backbone file."""
import argparse
import io
import shutil

import pytest
import torch

from engine.checkpoint import Checkpointer, resume, save_checkpoint, training_state
from engine.cli import message
from engine.optim import Schedules, build_optimizer
from engine.train_step import Stepper
from models import create_model
from models import load_checkpoint_file, load_pretrained, model_from_checkpoint
from models._helpers import load_strict
from models.keymap import TunedCheckpointError
from models.tuning import BackboneError, Tuning, apply_tuning, backbone_reference, is_trained, merge_tuning, \
    model_state, parameter_counts

ARCH = dict(img_size=32, num_frames=8, stage_depths=(1, 1, 1), embed_dim=64, num_heads=2, num_classes=5)
ARGS = {"model": "svfap_tiny_patch16_160", "input_size": 32, "num_frames": 8, "stage_depths": [1, 1, 1],
        "embed_dim": 64, "num_heads": 2, "data_set": "custom", "nb_classes": 5}
HEAD = {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("svfap_tiny_patch16_160", init_scale=1.0, **{**ARCH, **kw})


def clips(n=4, seed=1):
    return torch.randn(n, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomise_adapters(model, seed=2):
    """LoRA's B starts at zero (the adapted model equals the base); a trained one does not."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)


def one_step(model):
    """One step of the training loop's Stepper with the optimizer run_finetune.py builds (AdamW,
    weight decay, layer decay); returns every tensor of the state dict before and after."""
    args = argparse.Namespace(opt="adamw", lr=1e-2, weight_decay=0.05, layer_decay=0.75, momentum=0.9, update_freq=1,
                              clip_grad=None, epochs=1, warmup_epochs=0, warmup_steps=-1, min_lr=1e-2, warmup_lr=1e-2,
                              weight_decay_end=None)
    optimizer = build_optimizer(args, model)
    stepper = Stepper(model, optimizer, Schedules(args, optimizer, 1), None, args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss = torch.nn.functional.cross_entropy(model(clips()), torch.tensor([0, 1, 2, 3]))
    stepper(loss, 0, stepper.start(0, 0, 1))
    return before, model.state_dict()


def changed(before, after):
    return {k for k in after if not torch.equal(before[k], after[k])}


def test_a_linear_step_changes_only_the_head():
    model = apply_tuning(tiny(drop_path_rate=0.5, drop_rate=0.3), Tuning("linear"))
    before, after = one_step(model)
    assert changed(before, after) == HEAD
    assert parameter_counts(model)[0] == sum(before[k].numel() for k in HEAD)


def test_a_linear_probe_keeps_the_encoder_in_eval_mode_while_training():
    """Drop path 0.5 and dropout 0.3 would make two training-mode passes differ; frozen, they do not."""
    model = apply_tuning(tiny(drop_path_rate=0.5, drop_rate=0.3), Tuning("linear")).train()
    x = clips(2)
    torch.testing.assert_close(model.forward_features(x), model.forward_features(x), rtol=0, atol=0)
    model(x)
    assert model.training and model.head.training
    called = [m for m in model.blocks.modules() if not isinstance(m, torch.nn.ModuleList)]  # lists are not called
    assert not any(m.training for m in called)
    full = tiny(drop_path_rate=0.5, drop_rate=0.3).train()
    assert not torch.equal(full.forward_features(x), full.forward_features(x))  # the check can fail
    merge_tuning(model).train()(x)  # a plain model again: training mode reaches the blocks
    assert all(m.training for m in model.blocks.modules())


def test_a_lora_step_changes_only_the_adapters_and_the_head():
    model = apply_tuning(tiny(), Tuning("lora", lora_rank=4, lora_blocks="1-2", lora_targets="qkv,fc2"))
    randomise_adapters(model)
    before, after = one_step(model)
    adapters = {k for k in after if ".lora_A." in k or ".lora_B." in k}
    assert len(adapters) == 2 * 2 * 2  # blocks 1 and 2, qkv and fc2, A and B
    assert all(k.startswith(("blocks.1.", "blocks.2.")) and (".attn.qkv." in k or ".mlp.fc2." in k) for k in adapters)
    assert changed(before, after) == adapters | HEAD
    # the attention's separate q/v biases stay frozen, as every weight outside the adapters and head
    assert {"blocks.1.attn.q_bias", "blocks.1.attn.v_bias"} <= set(after) - changed(before, after)


def test_a_qkv_adapter_reaches_the_output():
    """timm's attention applies qkv with F.linear on its weight when it has q/v biases, which
    would skip an adapter around it."""
    model = tiny().eval()
    x = clips(2)
    base = model.forward_features(x)
    apply_tuning(model, Tuning("lora", lora_targets="qkv", lora_blocks="0"))
    torch.testing.assert_close(model.forward_features(x), base)  # B = 0: the base model
    randomise_adapters(model)
    assert (model.forward_features(x) - base).abs().max() > 1e-3


def test_merged_and_unmerged_lora_give_the_same_logits():
    model = apply_tuning(tiny(), Tuning("lora")).eval()
    randomise_adapters(model)
    x = clips(3)
    with torch.no_grad():
        unmerged = model(x)
        merged = merge_tuning(model)(x)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert not any("lora" in k or "base_layer" in k for k in model.state_dict())
    plain = load_strict(tiny(seed=5).eval(), model.state_dict())  # the usual keys, strictly
    torch.testing.assert_close(plain(x), unmerged, rtol=0, atol=1e-5)


def test_the_svfap_b_adapter_checkpoint_is_small():
    """SVFAP-B with the default adapters (rank 8 on qkv, proj, fc1, fc2 of all 21 blocks): the
    checkpoint keeps rank x (in + out) per adapted layer and the head, under 2% of the model."""
    model = create_model("svfap_base_patch16_160", num_classes=7)
    full = io.BytesIO()
    torch.save(model.state_dict(), full)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    apply_tuning(model, Tuning("lora"))
    targets = [n for i in range(21) for n in (f"blocks.{i}.attn.qkv", f"blocks.{i}.attn.proj", f"blocks.{i}.mlp.fc1",
                                              f"blocks.{i}.mlp.fc2")]
    expected = sum(8 * (linears[n].in_features + linears[n].out_features) for n in targets) + 512 * 7 + 7 + 2 * 512
    state = model_state(model)
    assert sum(v.numel() for v in state.values()) == parameter_counts(model)[0] == expected
    adapter = io.BytesIO()
    torch.save(state, adapter)
    assert adapter.tell() < 0.02 * full.tell()


# -- checkpoints over a backbone file ----------------------------------------------------------------------

@pytest.fixture()
def backbone(tmp_path):
    path = tmp_path / "backbone.pth"
    save_checkpoint(str(path), {"model": tiny(seed=3).state_dict(), "args": ARGS})
    return path


def tuned_checkpoint(backbone, path, mode="lora"):
    """A tuned model saved the way run_finetune.py saves it; returns its eval-mode logits on clips()."""
    model = tiny(seed=4)
    load_pretrained(model, str(backbone), verbose=False)
    apply_tuning(model, Tuning(mode, lora_rank=4), backbone_reference(backbone))
    randomise_adapters(model)
    with torch.no_grad():
        model.head.weight.normal_()
    save_checkpoint(str(path), training_state(model, args={**ARGS, "tuning": mode, "lora_rank": 4}, epoch=0))
    with torch.no_grad():
        return model.eval()(clips())


@pytest.mark.parametrize("mode", ["linear", "lora"])
def test_a_tuned_checkpoint_holds_the_trained_part_and_loads_over_its_backbone(backbone, tmp_path, mode):
    logits = tuned_checkpoint(backbone, tmp_path / "tuned.pth", mode)
    ckpt = load_checkpoint_file(tmp_path / "tuned.pth")
    assert ckpt["tuning"]["mode"] == mode and ckpt["backbone"]["path"] == str(backbone)
    tuning = Tuning(**ckpt["tuning"])
    assert ckpt["model"] and all(is_trained(k, tuning) for k in ckpt["model"])
    model, cfg = model_from_checkpoint(tmp_path / "tuned.pth", kind="classifier")
    assert cfg["nb_classes"] == 5
    with torch.no_grad():
        torch.testing.assert_close(model(clips()), logits, rtol=0, atol=1e-6)


def test_a_moved_backbone_is_found_by_flag_and_a_changed_one_refused(backbone, tmp_path):
    logits = tuned_checkpoint(backbone, tmp_path / "tuned.pth")
    moved = tmp_path / "elsewhere" / "backbone.pth"
    moved.parent.mkdir()
    shutil.move(backbone, moved)
    with pytest.raises(BackboneError, match="no longer at its recorded path") as missing:
        model_from_checkpoint(tmp_path / "tuned.pth")
    assert (missing.value.reason, missing.value.path) == ("missing", str(backbone))
    assert message(missing.value).endswith("say where it is now with --backbone PATH")  # the command line's words
    model, _ = model_from_checkpoint(tmp_path / "tuned.pth", {"backbone": str(moved)})  # a tool's --backbone
    with torch.no_grad():
        torch.testing.assert_close(model(clips()), logits, rtol=0, atol=1e-6)
    save_checkpoint(str(moved), {"model": tiny(seed=9).state_dict(), "args": ARGS})  # same path, other weights
    with pytest.raises(BackboneError, match="not the one this checkpoint was trained on"):
        model_from_checkpoint(tmp_path / "tuned.pth", backbone=moved)


def test_a_tuned_checkpoint_is_no_starting_point_for_a_new_run(backbone, tmp_path):
    tuned_checkpoint(backbone, tmp_path / "tuned.pth")
    with pytest.raises(TunedCheckpointError) as refused:
        load_pretrained(tiny(), str(tmp_path / "tuned.pth"))
    assert refused.value.mode == "lora" and refused.value.backbone == str(backbone)
    assert "python -m tools.merge_lora CHECKPOINT --out FILE" in message(refused.value)


def _resume_args(finetune, out, **kw):
    return argparse.Namespace(**{**ARGS, "tuning": "lora", "lora_rank": 4, "finetune": str(finetune), "resume": "",
                                 "auto_resume": True, "output_dir": str(out), "force_resume": False, **kw})


def _run_model(backbone):
    model = tiny(seed=4)
    load_pretrained(model, str(backbone), verbose=False)
    return apply_tuning(model, Tuning("lora", lora_rank=4), backbone_reference(backbone))


def test_resume_restores_the_adapters_and_checks_the_backbone(backbone, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    first = _run_model(backbone)
    randomise_adapters(first)
    Checkpointer(str(out)).save_epoch(0, training_state(first, args=_resume_args(backbone, out), epoch=0))
    # the same backbone at another path is the same run
    moved = tmp_path / "moved.pth"
    shutil.copy(backbone, moved)
    again = _run_model(moved)
    epoch, _, _ = resume(_resume_args(moved, out), Checkpointer(str(out)), again)
    assert epoch == 1
    for key, value in model_state(first).items():
        torch.testing.assert_close(model_state(again)[key], value, rtol=0, atol=0)
    # other backbone weights are refused, whatever the path
    save_checkpoint(str(moved), {"model": tiny(seed=9).state_dict(), "args": ARGS})
    with pytest.raises(BackboneError, match="not the backbone this run was trained on"):
        resume(_resume_args(moved, out), Checkpointer(str(out)), _run_model(moved))

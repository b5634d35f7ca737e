"""Checkpoint loading: release formats load, anything that does not fit raises with a reason."""
import argparse

import numpy as np
import pytest
import timm
import torch

import models  # noqa: F401
from models import CheckpointMismatchError, load_checkpoint_file, load_pretrained

TINY_FT = dict(img_size=64, embed_dim=64, num_heads=4, stage_depths=(2, 2, 2), num_bottleneck_tokens=4)
TINY_PT = dict(img_size=64, encoder_embed_dim=64, encoder_num_heads=4, stage_depths=(2, 2, 2),
               num_bottleneck_tokens=4, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def _release_checkpoint(path, state_dict, key="model", **extra_args):
    args = argparse.Namespace(model="pretrain_svfap_base_patch16_160", num_frames=16, input_size=64,
                              mask_ratio=np.float64(0.9), **extra_args)
    torch.save({key: state_dict, "optimizer": {}, "epoch": 99, "scaler": {}, "args": args}, path)
    return path


def test_pretrain_checkpoint_round_trip_into_finetune_model(tmp_path):
    torch.manual_seed(0)
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PT)
    path = _release_checkpoint(tmp_path / "checkpoint-99.pth", pre.state_dict())
    ft = timm.create_model("svfap_base_patch16_160", num_classes=5, **TINY_FT)
    report = load_pretrained(ft, str(path), verbose=False)
    encoder = pre.encoder.state_dict()
    for key, value in ft.state_dict().items():
        if key.startswith(("head.", "fc_norm.")):
            continue
        torch.testing.assert_close(value, encoder[key], atol=0, rtol=0)
    assert set(report["new_head"]) >= {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    assert any(k.startswith("decoder.") for k in report["unused"]) is False  # dropped before matching
    # the fine-tuned encoder's features equal the pre-trained trunk's last stage
    x = torch.randn(1, 3, 16, 64, 64)
    ft.eval(), pre.eval()
    with torch.no_grad():
        tokens = pre.encoder.embed(x).reshape(1, 8, 16, 64)
        last = pre.encoder.forward_stages(tokens)[-1]
        torch.testing.assert_close(ft.forward_features(x), ft.fc_norm(last.mean((1, 2))))


def test_checkpoint_file_with_namespace_loads_weights_only(tmp_path):
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PT)
    path = _release_checkpoint(tmp_path / "c.pth", pre.state_dict())
    ckpt = load_checkpoint_file(path)
    assert ckpt["args"].model == "pretrain_svfap_base_patch16_160" and ckpt["epoch"] == 99


def test_wider_checkpoint_fails_and_says_so(tmp_path):
    # The release registered the pre-training model 768 wide; fine-tuning it must not start silently.
    # Widths as the release's, depths and frame size small: the width is what is checked.
    small = dict(img_size=64, stage_depths=(1, 1, 1), num_bottleneck_tokens=4)
    pre = timm.create_model("pretrain_svfap_base_patch16_160", encoder_embed_dim=768, encoder_num_heads=12,
                            decoder_depth=1, **small)
    path = _release_checkpoint(tmp_path / "wide.pth", pre.state_dict())
    ft = timm.create_model("svfap_base_patch16_160", **small)
    assert ft.embed_dim == 512
    before = ft.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(CheckpointMismatchError, match="768 wide but the model is 512 wide"):
        load_pretrained(ft, path, verbose=False)
    assert torch.equal(before, ft.blocks[0].attn.qkv.weight)


def test_missing_weights_raise(tmp_path):
    sd = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PT).state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("encoder.spatial_downsamples.1.")}
    ft = timm.create_model("svfap_base_patch16_160", **TINY_FT)
    with pytest.raises(CheckpointMismatchError, match="spatial_downsamples.1"):
        load_pretrained(ft, {"model": sd}, verbose=False)


def test_finetune_checkpoint_with_other_class_count_gets_new_head():
    src = timm.create_model("svfap_base_patch16_160", num_classes=7, **TINY_FT)
    dst = timm.create_model("svfap_base_patch16_160", num_classes=11, **TINY_FT)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    report = load_pretrained(dst, {"module": sd}, model_key="model|module", verbose=False)
    assert any(r.startswith("head.weight") for r in report["new_head"])
    torch.testing.assert_close(dst.fc_norm.weight, src.fc_norm.weight)
    assert dst.head.out_features == 11


def test_same_model_checkpoint_loads_everything():
    src = timm.create_model("svfap_base_patch16_160", num_classes=7, init_scale=1.0, **TINY_FT).eval()
    dst = timm.create_model("svfap_base_patch16_160", num_classes=7, **TINY_FT).eval()
    report = load_pretrained(dst, src.state_dict(), verbose=False)
    assert report["new_head"] == [] and report["missing"] == []
    x = torch.randn(1, 3, 16, 64, 64)
    torch.testing.assert_close(dst(x), src(x))


def test_learnable_position_table_is_interpolated_to_new_frames(tmp_path):
    src = timm.create_model("svfap_base_patch16_160", use_learnable_pos_emb=True, **TINY_FT)
    dst = timm.create_model("svfap_base_patch16_160", use_learnable_pos_emb=True, all_frames=32, **TINY_FT)
    report = load_pretrained(dst, {"model": src.state_dict()}, verbose=False)
    assert report["interpolated"] and dst.pos_embed.shape == (1, 256, 64)
    # frames repeat pairwise in time when the grid doubles; the spatial layout is kept
    src_grid = src.pos_embed.view(8, 16, 64)
    dst_grid = dst.pos_embed.detach().view(16, 16, 64)
    torch.testing.assert_close(dst_grid[0], src_grid[0])
    torch.testing.assert_close(dst_grid[-1], src_grid[-1])


def test_bad_checkpoint_layout_is_reported():
    ft = timm.create_model("svfap_base_patch16_160", **TINY_FT)
    with pytest.raises(CheckpointMismatchError, match="no state dict"):
        load_pretrained(ft, {"epoch": 3, "optimizer": {"lr": 1.0}}, verbose=False)


def test_a_model_without_mean_pooling_takes_the_encoders_final_norm(tmp_path):
    # --use_cls (--use_mean_pooling False) reads the first token through ``norm``: the release loads the
    # pre-trained encoder's norm there; with mean pooling (norm = identity) it is left out.
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PT)
    with torch.no_grad():
        pre.encoder.norm.weight.uniform_(0.5, 1.5)
    cls = timm.create_model("svfap_base_patch16_160", use_mean_pooling=False, **TINY_FT)
    report = load_pretrained(cls, {"model": pre.state_dict()}, verbose=False)
    torch.testing.assert_close(cls.norm.weight, pre.encoder.norm.weight, rtol=0, atol=0)
    assert "norm.weight" in report["loaded"] and report["missing"] == []
    mean = timm.create_model("svfap_base_patch16_160", **TINY_FT)
    assert "norm.weight" not in load_pretrained(mean, {"model": pre.state_dict()}, verbose=False)["unused"]


def test_keys_saved_from_a_compiled_ddp_model_load(tmp_path):
    """engine/runtime.py wraps DDP first, then torch.compile: the saved keys read
    ``_orig_mod.module.blocks...``; every loader takes them."""
    from engine.checkpoint import Checkpointer, resume
    from models import model_from_checkpoint
    from models._helpers import load_strict

    arch = dict(TINY_FT, img_size=32, num_frames=8)
    torch.manual_seed(0)
    src = timm.create_model("svfap_base_patch16_160", num_classes=5, init_scale=1.0, **arch).eval()
    store = tmp_path / "store"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        wrapped = torch.compile(torch.nn.parallel.DistributedDataParallel(src))
        state = wrapped.state_dict()
    finally:
        torch.distributed.destroy_process_group()
    assert all(k.startswith("_orig_mod.module.") for k in state)
    args = {"model": "svfap_base_patch16_160", "input_size": 32, "num_frames": 8, "stage_depths": [2, 2, 2],
            "num_bottleneck_tokens": [4], "embed_dim": 64, "num_heads": 4, "nb_classes": 5}
    torch.save({"model": state, "args": args, "epoch": 0}, tmp_path / "checkpoint-0.pth")

    def fresh():
        return timm.create_model("svfap_base_patch16_160", num_classes=5, **arch).eval()

    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = src(x)
        loaded = [load_strict(fresh(), state)]  # resume and evaluation load strictly
        report = load_pretrained(m := fresh(), str(tmp_path / "checkpoint-0.pth"), verbose=False)  # --finetune
        assert report["new_head"] == [] and report["unused"] == []
        loaded.append(m)
        loaded.append(model_from_checkpoint(tmp_path / "checkpoint-0.pth", kind="classifier")[0])  # the tools
        loaded.append(timm.create_model("svfap_base_patch16_160", num_classes=5, pretrained=True,  # timm
                                        pretrained_cfg_overlay=dict(file=str(tmp_path / "checkpoint-0.pth")),
                                        **arch).eval())
        for model in loaded:
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    run = fresh()
    epoch, _, _ = resume(argparse.Namespace(resume="", auto_resume=True, **args), Checkpointer(str(tmp_path)), run)
    assert epoch == 1
    with torch.no_grad():
        torch.testing.assert_close(run(x), expected, rtol=0, atol=0)


def test_errors_carry_their_facts_across_processes():
    # from_rank0 hands rank 0's exception to the other ranks by pickling it
    import pickle

    from engine.cli import exit_status, message
    from models import CheckpointReadError, WeightsMismatchError
    from models.from_checkpoint import ConfigConflictError
    for err in (WeightsMismatchError("checkpoint", 3, ["a: checkpoint (2,), model (3,)"], ["b"], [], (768, 512)),
                CheckpointReadError("x.pth", None), ConfigConflictError({"num_frames": (8, 16)})):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err) and vars(again) == vars(err)
        assert exit_status(again) == 2 and message(again) == message(err)
    assert "768 wide but the model is 512 wide" in message(err := WeightsMismatchError("x", widths=(768, 512)))
    assert message(err).endswith("or check the file with `python -m tools.model_info --checkpoint`")
    assert message(ConfigConflictError({"num_frames": (8, 16)})).startswith(
        "options that disagree with the checkpoint: --num_frames 8 (the checkpoint records 16)")

"""Layer-wise lr decay groups, no-weight-decay sets and the per-step schedules."""
import argparse

import numpy as np
import pytest
import timm

import models  # noqa: F401
from engine.optim import Schedules, batch_line, build_optimizer, scaled_lrs


def _args(**kw):
    base = dict(opt="adamw", lr=1e-3, min_lr=1e-6, warmup_lr=1e-6, weight_decay=0.05, weight_decay_end=None,
                layer_decay=0.75, opt_betas=[0.9, 0.999], opt_eps=1e-8, momentum=0.9, epochs=10, warmup_epochs=2,
                warmup_steps=-1, batch_size=16, update_freq=2, world_size=4, clips_per_video=1)
    base.update(kw)
    return argparse.Namespace(**base)


def _groups_by_name(model, args):
    opt = build_optimizer(args, model)
    seen = {}
    for g in opt.param_groups:
        for p in g["params"]:
            assert id(p) not in seen, "parameter in two groups"
            seen[id(p)] = g
    names = dict(model.named_parameters())
    assert set(seen) == {id(p) for p in names.values()}
    return {name: seen[id(p)] for name, p in names.items()}


def release_layer_id(name, num_blocks):
    """The release's layer id of a parameter (optim_factory.get_num_layer_for_vit): the embedding
    0, block i at i + 1, every other name on top."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_blocks + 1


def _small_model():
    return timm.create_model("svfap_base_patch16_160", img_size=64, embed_dim=64, num_heads=4,
                             stage_depths=(2, 2, 1), num_bottleneck_tokens=4)


def test_every_parameter_gets_the_releases_lr_scale_and_weight_decay():
    """The release's assigner: scale decay ** (L + 1 - layer id) for L blocks, so the temporal
    downsampling convs and the bottleneck modules take the full lr (their names are neither a
    block's nor the embedding's)."""
    model = _small_model()
    groups = _groups_by_name(model, _args())
    num_blocks = 5
    for name, p in model.named_parameters():
        want = 0.75 ** (num_blocks + 1 - release_layer_id(name, num_blocks))
        assert groups[name]["lr_scale"] == pytest.approx(want), name
        decays = groups[name]["weight_decay"] > 0
        no_decay = p.ndim <= 1 or name.endswith(("q_bias", "v_bias")) or "pos_embed" in name
        assert decays != no_decay, name
    stage_modules = [n for n in groups if n.startswith(("temporal_downsamples", "spatial_downsamples"))]
    assert len(stage_modules) > 8 and all(groups[n]["lr_scale"] == 1.0 for n in stage_modules)


def test_stage_scheme_gives_stage_modules_their_stage_decay():
    """--layer_decay_scheme stage: a later stage's temporal conv and bottleneck take the depth of
    the stage's first block; everything else as the release."""
    model = _small_model()
    groups = _groups_by_name(model, _args(layer_decay_scheme="stage"))
    num_layers = 5 + 2  # embedding, 5 blocks, head
    scale = lambda layer: 0.75 ** (num_layers - 1 - layer)  # noqa: E731
    expected = {
        "patch_embed.proj.weight": scale(0), "blocks.0.attn.qkv.weight": scale(1), "blocks.1.mlp.fc1.weight": scale(2),
        # stage 2 starts at block 2: its temporal conv and bottleneck take block 2's depth, not the full lr
        "temporal_downsamples.0.weight": scale(3), "spatial_downsamples.0.mlp.fc1.weight": scale(3),
        "blocks.2.cross_attn.q.weight": scale(3), "blocks.3.attn.qkv.weight": scale(4),
        "temporal_downsamples.1.weight": scale(5), "spatial_downsamples.1.norm.weight": scale(5),
        "blocks.4.mlp.fc2.weight": scale(5), "fc_norm.weight": 1.0, "head.weight": 1.0,
    }
    for name, want in expected.items():
        assert groups[name]["lr_scale"] == pytest.approx(want), name


def test_pretrain_model_groups_exclude_mask_token_and_biases():
    model = timm.create_model("pretrain_svfap_tiny_patch16_160", img_size=64, stage_depths=(1, 1, 1))
    opt = build_optimizer(_args(layer_decay=None), model)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["mask_token"]) in no_decay
    assert id(named["encoder.blocks.0.attn.q_bias"]) in no_decay
    assert id(named["encoder.blocks.0.attn.qkv.weight"]) not in no_decay


def test_lr_scaling_and_schedule_shape():
    args = _args()
    scaled = scaled_lrs(args)
    factor = 16 * 2 * 4 / 256
    assert scaled == pytest.approx({"base_lr": 1e-3, "lr": 1e-3 * factor, "min_lr": 1e-6 * factor,
                                    "warmup_lr": 1e-6 * factor})
    assert args.lr == 1e-3  # nothing but engine.config.resolve writes to args
    vars(args).update(scaled)
    model = timm.create_model("svfap_tiny_patch16_160", img_size=64, stage_depths=(1, 1, 1))
    opt = build_optimizer(args, model)
    steps = 10
    sched = Schedules(args, opt, steps)
    lrs, wds = [], []
    for step in range(args.epochs * steps):
        sched.step(step)
        lr, wd = sched.current()
        lrs.append(lr)
        wds.append(wd)
    assert lrs[0] == pytest.approx(args.warmup_lr)
    assert max(lrs) == pytest.approx(args.lr, rel=1e-6)
    assert int(np.argmax(lrs)) == 2 * steps  # warm-up lasts warmup_epochs
    assert args.min_lr <= lrs[-1] < args.min_lr + 1e-3 * (args.lr - args.min_lr)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))  # cosine decay is monotone
    assert wds[0] == pytest.approx(0.05) and wds[-1] == pytest.approx(0.05)
    # groups without weight decay stay at zero while the schedule runs
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if not g["decays"])


def test_repeated_sampling_counts_in_the_batch_and_the_lr():
    """--num_samples / --num_sample K: a step takes K clips of each video; the lr is scaled by the
    clips a step takes (as in MAE-ST), and the run's first lines say so."""
    one, two = _args(), _args(clips_per_video=2)
    assert scaled_lrs(two)["lr"] == pytest.approx(2 * scaled_lrs(one)["lr"])
    vars(two).update(scaled_lrs(two))
    assert batch_line(two).startswith("effective batch 256 clips (16 videos x 2 clips per process")
    vars(one).update(scaled_lrs(one))
    assert batch_line(one).startswith("effective batch 128 clips, lr 5.000e-04")


def test_weight_decay_schedule_moves_to_end_value():
    args = _args(weight_decay=0.04, weight_decay_end=0.4)
    vars(args).update(scaled_lrs(args))
    model = timm.create_model("svfap_tiny_patch16_160", img_size=64, stage_depths=(1, 1, 1))
    opt = build_optimizer(args, model)
    sched = Schedules(args, opt, 5)
    sched.step(0)
    assert sched.current()[1] == pytest.approx(0.04)
    sched.step(49)
    assert sched.current()[1] == pytest.approx(0.4, rel=0.01)

"""timm-native models: pretrained configs, and ``pretrained=True`` loading the file the caller names."""
import argparse

import numpy as np
import pytest
import timm
import torch
from timm.data import resolve_data_config

import models
from models import CheckpointMismatchError
from models import CheckpointReadError

# SVFAP-B's width (512) and heads with fewer blocks and a smaller clip; TINY for what the width does not matter to.
BASE_SMALL = dict(img_size=64, num_frames=8, stage_depths=(1, 1, 1), num_bottleneck_tokens=2)
TINY = dict(BASE_SMALL, embed_dim=64, num_heads=2)
PRETRAIN_TINY = dict(TINY, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def _load(name, path, **kwargs):
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def _release_file(path, state_dict, **args):
    # As the release saves: the weights, training state, and argparse.Namespace args holding numpy scalars
    # (which timm's own reader refuses).
    args = argparse.Namespace(model="svfap_base_patch16_160", input_size=64, num_frames=8,
                              layer_decay=np.float64(0.75), **args)
    torch.save({"model": state_dict, "optimizer": {}, "epoch": 99, "scaler": {}, "args": args}, path)
    return path


def _assert_same(model, state_dict, skip=()):
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    assert own and set(own) <= set(state_dict)
    for key, value in own.items():
        assert torch.equal(value, state_dict[key]), key


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_data_config_is_the_models_input(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, 160, 160) and cfg.file is None and cfg.url is None
    assert cfg.classifier == (None if name.startswith("pretrain_") else "head")
    model = timm.create_model(name, **(PRETRAIN_TINY if name.startswith("pretrain_") else TINY))
    data = resolve_data_config({}, model=model)
    # built for 64 px here: the data config follows the model, not the registered size
    assert data["input_size"] == (3, 64, 64)
    assert data["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and data["std"] == timm.data.IMAGENET_DEFAULT_STD
    assert data["crop_pct"] == 1.0


def test_data_config_of_the_registered_size_is_160():
    model = timm.create_model("svfap_tiny_patch16_160")
    assert resolve_data_config({}, model=model)["input_size"] == (3, 160, 160)
    assert model.num_frames == 16


def test_release_file_loads_with_identical_weights(tmp_path):
    src = timm.create_model("svfap_base_patch16_160", init_scale=1.0, **BASE_SMALL).eval()
    path = _release_file(tmp_path / "released.pth", src.state_dict())
    model = _load("svfap_base_patch16_160", path, **BASE_SMALL).eval()
    assert model.embed_dim == 512
    _assert_same(model, src.state_dict())
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


def test_other_class_count_gets_a_new_head(tmp_path):
    src = timm.create_model("svfap_base_patch16_160", init_scale=1.0, **TINY)
    path = _release_file(tmp_path / "released.pth", src.state_dict())
    torch.manual_seed(0)
    fresh = timm.create_model("svfap_base_patch16_160", num_classes=3, init_scale=1.0, **TINY)
    torch.manual_seed(0)
    model = _load("svfap_base_patch16_160", path, num_classes=3, init_scale=1.0, **TINY)
    assert model.head.weight.shape == (3, 64)
    _assert_same(model, src.state_dict(), skip=("head.",))
    # the head is the model's own initialisation, nothing of the file's 7-class head
    torch.testing.assert_close(model.head.weight, fresh.head.weight, rtol=0, atol=0)


def test_wider_file_raises(tmp_path):
    wide = timm.create_model("svfap_base_patch16_160", embed_dim=768, num_heads=12, **BASE_SMALL)
    path = _release_file(tmp_path / "wide.pth", wide.state_dict())
    with pytest.raises(CheckpointMismatchError, match="768 wide but the model is 512 wide"):
        _load("svfap_base_patch16_160", path, **BASE_SMALL)


def test_pretraining_checkpoint_loads_into_the_finetuning_model(tmp_path):
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **PRETRAIN_TINY)
    # as run_pretrain.py saves it: args as a dict
    torch.save({"model": pre.state_dict(), "epoch": 3, "args": {"model": "pretrain_svfap_base_patch16_160"}},
               tmp_path / "checkpoint-3.pth")
    model = _load("svfap_base_patch16_160", tmp_path / "checkpoint-3.pth", num_classes=5, **TINY)
    _assert_same(model, pre.encoder.state_dict(), skip=("head.", "fc_norm."))


def test_project_finetuning_checkpoint_loads_whole(tmp_path):
    src = timm.create_model("svfap_base_patch16_160", num_classes=4, init_scale=1.0, **TINY)
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": "best",
                "args": {"model": "svfap_base_patch16_160", "nb_classes": 4}}, tmp_path / "checkpoint-best.pth")
    model = _load("svfap_base_patch16_160", tmp_path / "checkpoint-best.pth", num_classes=4, **TINY)
    _assert_same(model, src.state_dict())


def test_pretraining_model_loads_its_own_checkpoint_strictly(tmp_path):
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **PRETRAIN_TINY)
    torch.save({"model": pre.state_dict(), "args": {}}, tmp_path / "pre.pth")
    model = _load("pretrain_svfap_base_patch16_160", tmp_path / "pre.pth", **PRETRAIN_TINY)
    _assert_same(model, pre.state_dict())
    ft = timm.create_model("svfap_base_patch16_160", **TINY)
    torch.save({"model": ft.state_dict()}, tmp_path / "ft.pth")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        _load("pretrain_svfap_base_patch16_160", tmp_path / "ft.pth", **PRETRAIN_TINY)


def test_in_memory_state_dict_goes_through_the_filter():
    # timm reads this source itself; the filter maps the pre-training keys and keeps the new head
    pre = timm.create_model("pretrain_svfap_base_patch16_160", **PRETRAIN_TINY)
    model = timm.create_model("svfap_base_patch16_160", pretrained=True, num_classes=2, **TINY,
                              pretrained_cfg_overlay=dict(state_dict={"model": pre.state_dict()}))
    _assert_same(model, pre.encoder.state_dict(), skip=("head.", "fc_norm."))


def test_pretrained_without_a_file_says_how():
    with pytest.raises(ValueError, match=r"pretrained_cfg_overlay=dict\(file=PATH\)"):
        timm.create_model("svfap_tiny_patch16_160", pretrained=True)
    with pytest.raises(CheckpointReadError, match="not found"):
        _load("svfap_tiny_patch16_160", "no/such/file.pth", **TINY)


def test_keyword_overrides_and_aliases_still_apply():
    model = models.create_model("svfap_base_patch16_160", all_frames=8, norm_eps=1e-5, num_classes=3, **{
        k: v for k, v in TINY.items() if k != "num_frames"})
    assert model.num_frames == 8 and model.fc_norm.eps == 1e-5 and model.head.out_features == 3
    pre = models.create_model("pretrain_svfap_base_patch16_160", encoder_embed_dim=96, encoder_num_heads=2,
                              **PRETRAIN_TINY)
    assert pre.encoder.embed_dim == 96


# -- timm's model protocol, on SVFAP-B and SVFAP-S (their widths, heads and stages; a small clip) ------

CLIP = dict(img_size=32, num_frames=8)  # 4 x 2 x 2 tokens: stage outputs of 4, 2 and 1 time steps
PROTOCOL_MODELS = {name: timm.create_model(name, **CLIP).eval() for name in
                   ("svfap_base_patch16_160", "svfap_small_patch16_160")}
X = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", PROTOCOL_MODELS)
def test_classifier_protocol(name):
    model = PROTOCOL_MODELS[name]
    width = model.embed_dim
    assert model.get_classifier() is model.head and model.head.out_features == 7 and model.global_pool == "avg"
    try:
        model.reset_classifier(3)
        assert model.get_classifier().out_features == 3 and model.num_classes == 3
        features = torch.randn(1, width)
        assert model.forward_head(features).shape == (1, 3)
        model.reset_classifier(3, global_pool="avg")  # its own pooling: accepted
        with pytest.raises(ValueError, match="fixed when it is built"):
            model.reset_classifier(3, global_pool="token")
        model.reset_classifier(0)
        torch.testing.assert_close(model.forward_head(features), features)  # no classifier: the features
    finally:
        model.reset_classifier(7)


@pytest.mark.parametrize("name", PROTOCOL_MODELS)
def test_forward_head_and_intermediates(name):
    model = PROTOCOL_MODELS[name]
    c = model.embed_dim
    with torch.no_grad():
        final, stages = model.forward_intermediates(X)
        assert [tuple(s.shape) for s in stages] == [(1, c, 4, 2, 2), (1, c, 2, 2, 2), (1, c, 1, 2, 2)]
        pre_logits = model.forward_head(final, pre_logits=True)
        assert pre_logits.shape == (1, c)
        torch.testing.assert_close(pre_logits, final, rtol=0, atol=0)  # eval: the head's dropout is off
        # forward_intermediates' final output is forward_features': the head turns it into the model's output
        torch.testing.assert_close(model.forward_head(final), model(X), rtol=0, atol=0)
        only = model.forward_intermediates(X, indices=[0, -1], output_fmt="NLC", intermediates_only=True)
        assert [tuple(s.shape) for s in only] == [(1, 16, c), (1, 4, c)]
        # NLC holds the tokens of NCTHW, in (t, h, w) order
        torch.testing.assert_close(only[1], stages[-1].flatten(2).transpose(1, 2), rtol=0, atol=0)
        first = model.forward_intermediates(X, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(first[0], stages[0], rtol=0, atol=0)
        with pytest.raises(ValueError, match="NCTHW or NLC"):
            model.forward_intermediates(X, output_fmt="NCHW")
    info = model.feature_info
    assert [f["num_chs"] for f in info] == [c] * 3 and info[-1]["module"] == f"blocks.{len(model.blocks) - 1}"


def test_features_only_gives_the_stages_tokens():
    arch = dict(TINY, **CLIP)
    torch.manual_seed(0)
    whole = timm.create_model("svfap_base_patch16_160", **arch).eval()
    torch.manual_seed(0)
    features = timm.create_model("svfap_base_patch16_160", features_only=True, out_indices=(0, 1), **arch).eval()
    assert features.feature_info.channels() == [64, 64]
    pruned = features.model  # the third stage and the head are gone
    assert len(pruned.blocks) == 2 and len(pruned.spatial_downsamples) == len(pruned.temporal_downsamples) == 1
    assert isinstance(pruned.head, torch.nn.Identity)
    with torch.no_grad():
        maps = features(X)
        expected = whole.forward_intermediates(X, indices=(0, 1), intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 4, 2, 2), (1, 64, 2, 2, 2)]
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# -- the release's files as tagged pretrained configs ---------------------------------------------------

RELEASED = ["pretrain_svfap_base_patch16_160.voxceleb2", "svfap_base_patch16_160.voxceleb2"] + [
    f"svfap_base_patch16_160.voxceleb2_ft_{d}" for d in
    ["dfew_fold1", "dfew_fold2", "dfew_fold3", "dfew_fold4", "dfew_fold5", "ferv39k",
     "mafw_fold1", "mafw_fold2", "mafw_fold3", "mafw_fold4", "mafw_fold5"]]


def test_every_released_file_has_a_tagged_config_that_says_where_it_is():
    tagged = [n for arch in models.MODEL_NAMES for n in timm.models.get_arch_pretrained_cfgs(arch) if "." in n]
    assert sorted(tagged) == sorted(RELEASED)
    assert not timm.models.get_pretrained_cfg("svfap_base_patch16_160").tag  # the untagged one stays the default
    for name in RELEASED:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.url is None and cfg.file is None  # nothing is downloaded
        assert any("https://unioulu-my.sharepoint.com/" in note for note in cfg.notes), name
    classes = {n: timm.models.get_pretrained_cfg(n).num_classes for n in RELEASED}
    assert classes["svfap_base_patch16_160.voxceleb2"] == 0 and classes["pretrain_svfap_base_patch16_160.voxceleb2"] == 0
    assert {classes[n] for n in RELEASED if "_ft_dfew" in n or "ferv39k" in n} == {7}
    assert {classes[n] for n in RELEASED if "_ft_mafw" in n} == {11}


def test_a_tagged_config_builds_its_model_and_loads_the_file_given(tmp_path):
    name = "svfap_base_patch16_160.voxceleb2_ft_mafw_fold3"
    with pytest.raises(models.factory.NoWeightsError, match="unioulu-my.sharepoint.com.*pretrained_cfg_overlay"):
        timm.create_model(name, pretrained=True, **BASE_SMALL)
    src = timm.create_model(name, init_scale=1.0, **TINY).eval()
    assert src.head.out_features == 11  # MAFW's classes, from the tag
    path = _release_file(tmp_path / "mafw.pth", src.state_dict(), nb_classes=11)
    model = _load(name, path, **TINY).eval()
    assert model.pretrained_cfg["tag"] == "voxceleb2_ft_mafw_fold3"
    _assert_same(model, src.state_dict())
    # the pre-trained encoder's tag: no classifier unless asked for
    assert isinstance(timm.create_model("svfap_base_patch16_160.voxceleb2", **TINY).head, torch.nn.Identity)
    assert timm.create_model("svfap_base_patch16_160.voxceleb2", num_classes=7, **TINY).head.out_features == 7

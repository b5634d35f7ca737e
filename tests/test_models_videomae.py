"""VideoMAE interop: transformers' VideoMAE models (save_pretrained folders and plain state dicts) and the
original release's layout load into videomae_base_patch16_160 / pretrain_videomae_base_patch16_160 and compute
the same outputs."""
import argparse
import json

import pytest
import timm
import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel

import models  # noqa: F401  (registers the models with timm)
from models import CheckpointMismatchError, load_pretrained
from models import CheckpointReadError, model_from_checkpoint, read_checkpoint

# A reduced VideoMAE (64 wide, 2 blocks, 32 px, 4 frames) and the project's model of the same shape.
HF = dict(image_size=32, num_frames=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
          decoder_intermediate_size=128)
OURS = dict(img_size=32, num_frames=4, embed_dim=64, num_heads=4, stage_depths=(2,))
OURS_PRETRAIN = dict(OURS, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)
# What a user would type for a plain state dict, which carries no config.
TYPED = dict(input_size=32, num_frames=4, embed_dim=64, num_heads=4, stage_depths=[2])
TYPED_PRETRAIN = dict(TYPED, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def _random(model):
    """Every parameter drawn at random (transformers initialises biases to 0 and norms to 1, which would hide a
    swapped bias or norm)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _hf(cls, **config):
    return _random(cls(VideoMAEConfig(**{**HF, **config})))


def _saved(model, tmp_path, how):
    """The model as a save_pretrained folder, or as a torch.save'd state dict (its in-memory key names)."""
    if how == "folder":
        model.save_pretrained(tmp_path / "hf")
        return tmp_path / "hf"
    torch.save(model.state_dict(), tmp_path / "hf.pth")
    return tmp_path / "hf.pth"


def _clip(b=2):
    x = torch.randn(b, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    return x, x.transpose(1, 2)  # ours (B, C, T, H, W); transformers (B, T, C, H, W)


def _tube_mask(b=2):
    mask = torch.zeros(b, 2, 4, dtype=torch.bool)  # 2 time steps x 2x2 positions
    mask[:, :, [0, 2, 3]] = True
    return mask.flatten(1)


@pytest.mark.parametrize("how", ["folder", "state_dict"])
@pytest.mark.parametrize("mean_pooling", [True, False])
def test_classifier_gives_the_same_logits(tmp_path, how, mean_pooling):
    hf = _hf(VideoMAEForVideoClassification, num_labels=5, use_mean_pooling=mean_pooling)
    path = _saved(hf, tmp_path, how)
    typed = {} if how == "folder" else dict(TYPED, use_mean_pooling=mean_pooling)
    model, config = model_from_checkpoint(path, typed, kind="classifier")
    assert config["model"] == "videomae_base_patch16_160" and model.head.out_features == 5
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("how", ["folder", "state_dict"])
def test_classifier_loads_for_finetuning_with_its_head(tmp_path, how):
    hf = _hf(VideoMAEForVideoClassification, num_labels=5)
    model = timm.create_model("videomae_base_patch16_160", num_classes=5, **OURS).eval()
    report = load_pretrained(model, _saved(hf, tmp_path, how), verbose=False)
    assert report["new_head"] == [] and report["unused"] == []
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("how", ["folder", "state_dict"])
def test_pretraining_model_gives_the_same_reconstruction(tmp_path, how):
    hf = _hf(VideoMAEForPreTraining, use_mean_pooling=False)  # as transformers converts VideoMAE's pre-training
    path = _saved(hf, tmp_path, how)
    model, config = model_from_checkpoint(path, {} if how == "folder" else TYPED_PRETRAIN, kind="pretrain")
    assert config["model"] == "pretrain_videomae_base_patch16_160"
    x, x_hf = _clip()
    mask = _tube_mask()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x, mask),
                                   hf.videomae(x_hf, bool_masked_pos=mask).last_hidden_state, atol=1e-4, rtol=0)
        torch.testing.assert_close(model(x, mask), hf(x_hf, bool_masked_pos=mask).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("how", ["folder", "state_dict"])
def test_backbone_gives_the_same_encoder_output(tmp_path, how):
    hf = _hf(VideoMAEModel)  # mean pooling: no final norm, nothing after the blocks
    model = timm.create_model("videomae_base_patch16_160", num_classes=3, **OURS).eval()
    report = load_pretrained(model, _saved(hf, tmp_path, how), verbose=False)
    assert sorted(report["new_head"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(x).flatten(1, 2), hf(x_hf).last_hidden_state,
                                   atol=1e-4, rtol=0)


def test_pretraining_folder_starts_finetuning(tmp_path):
    hf = _hf(VideoMAEForPreTraining, use_mean_pooling=False)
    path = _saved(hf, tmp_path, "folder")
    pre, _ = model_from_checkpoint(path, kind="pretrain")
    model = timm.create_model("videomae_base_patch16_160", num_classes=3, **OURS)
    report = load_pretrained(model, read_checkpoint(path), verbose=False)  # what run_finetune.py --finetune does
    encoder = pre.encoder.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(("head.", "fc_norm.")):
            assert torch.equal(value, encoder[key]), key
    assert report["regridded"] == []


def test_other_clip_size_loads_with_the_models_own_positions(tmp_path):
    # Neither layout stores the fixed sinusoid table: a 32-px checkpoint fits a 48-px model weight for weight, and
    # the model uses the positions of its own grid (as VideoMAE's fine-tuning does); the report says so.
    path = _saved(_hf(VideoMAEForPreTraining, use_mean_pooling=False), tmp_path, "folder")
    model = timm.create_model("videomae_base_patch16_160", **dict(OURS, img_size=48))
    report = load_pretrained(model, path, verbose=False)
    assert report["regridded"] == ["token grid 2x2x2 in the checkpoint, 2x3x3 in the model "
                                   "(fixed sinusoid positions of the model's grid)"]


def test_timm_create_model_reads_a_folder(tmp_path):
    hf = _hf(VideoMAEForVideoClassification, num_labels=5)
    path = _saved(hf, tmp_path, "folder")
    model = timm.create_model("videomae_base_patch16_160", pretrained=True, num_classes=5, **OURS,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)


# The original VideoMAE release's key names (its modeling_finetune / modeling_pretrain), written out.
def _release_keys(depth, decoder_depth=None):
    block = ["norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.qkv.weight", "attn.proj.weight",
             "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
             "mlp.fc2.bias"]
    blocks = lambda prefix, n: [f"{prefix}blocks.{i}.{k}" for i in range(n) for k in block]  # noqa: E731
    if decoder_depth is None:
        return {"patch_embed.proj.weight", "patch_embed.proj.bias", *blocks("", depth), "fc_norm.weight",
                "fc_norm.bias", "head.weight", "head.bias"}
    return {"encoder.patch_embed.proj.weight", "encoder.patch_embed.proj.bias", *blocks("encoder.", depth),
            "encoder.norm.weight", "encoder.norm.bias", *blocks("decoder.", decoder_depth), "decoder.norm.weight",
            "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias", "encoder_to_decoder.weight", "mask_token"}


def test_project_models_have_the_original_release_layout():
    assert set(timm.create_model("videomae_base_patch16_160", **OURS).state_dict()) == _release_keys(2)
    assert set(timm.create_model("pretrain_videomae_base_patch16_160", **OURS_PRETRAIN).state_dict()) == \
        _release_keys(2, decoder_depth=1)


def test_original_release_files_load(tmp_path):
    hf = _hf(VideoMAEForVideoClassification, num_labels=5)
    ours, _ = model_from_checkpoint(_saved(hf, tmp_path, "folder"), kind="classifier")
    # a fine-tuned file as VideoMAE saves it: under 'module', args naming its own (timm-style) model
    args = argparse.Namespace(model="vit_base_patch16_224", input_size=32, num_frames=4, nb_classes=5)
    torch.save({"module": ours.state_dict(), "args": args}, tmp_path / "videomae_ft.pth")
    model, config = model_from_checkpoint(tmp_path / "videomae_ft.pth", {"num_heads": 4, "embed_dim": 64,
                                                                          "stage_depths": [2]}, kind="classifier")
    assert config["model"] == "videomae_base_patch16_160"
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)
    pre = timm.create_model("pretrain_videomae_base_patch16_160", **OURS_PRETRAIN)
    args = argparse.Namespace(model="pretrain_videomae_base_patch16_224", input_size=32, num_frames=4,
                              decoder_depth=1, mask_ratio=0.9)
    torch.save({"model": pre.state_dict(), "args": args}, tmp_path / "videomae_pt.pth")
    loaded, config = model_from_checkpoint(tmp_path / "videomae_pt.pth", TYPED_PRETRAIN, kind="pretrain")
    assert config["model"] == "pretrain_videomae_base_patch16_160"


def test_what_does_not_fit_is_refused(tmp_path):
    wide = _saved(_hf(VideoMAEModel, hidden_size=96, num_attention_heads=4, intermediate_size=384), tmp_path, "folder")
    with pytest.raises(CheckpointMismatchError, match="96 wide but the model is 64 wide"):
        load_pretrained(timm.create_model("videomae_base_patch16_160", **OURS), wide, verbose=False)
    config = json.loads((wide / "config.json").read_text())
    for change, message in [({"hidden_act": "gelu_new"}, "hidden_act"), ({"patch_size": 8}, "patch_size 8"),
                            ({"image_size": [32, 48]}, "square"), ({"model_type": "vit"}, "model_type")]:
        (wide / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointMismatchError, match=message):
            read_checkpoint(wide)
    state = _hf(VideoMAEModel).state_dict()
    state["encoder.layer.0.attention.attention.key.bias"] = torch.zeros(64)
    with pytest.raises(CheckpointMismatchError, match="no place"):
        load_pretrained(timm.create_model("videomae_base_patch16_160", **OURS), state, verbose=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointReadError, match="no config.json"):
        read_checkpoint(tmp_path / "empty")


def test_without_query_value_biases(tmp_path):
    # qv_bias=False: the q/v Linears have no bias; zero q_bias/v_bias compute the same
    hf = _hf(VideoMAEForVideoClassification, num_labels=5, qv_bias=False)
    model = timm.create_model("videomae_base_patch16_160", num_classes=5, **OURS).eval()
    load_pretrained(model, _saved(hf, tmp_path, "state_dict"), verbose=False)
    assert not model.blocks[0].attn.q_bias.any()
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)


def test_model_info_checks_a_folder(tmp_path, capsys):
    from tools import model_info
    path = _saved(_hf(VideoMAEForPreTraining, use_mean_pooling=False), tmp_path, "folder")
    assert model_info.main(["--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "against pretrain_videomae_base_patch16_160" in out and "verdict: loads (strict)" in out


def test_run_finetune_evaluates_a_transformers_classifier(tmp_path):
    # --eval --finetune FOLDER: the model, clip and depth come from config.json (the width from the registered
    # model: run_finetune.py has no width option), the weights through build_model
    from types import SimpleNamespace

    import run_finetune
    from engine.config import _evaluated_checkpoint
    hf = _hf(VideoMAEForVideoClassification, num_labels=5, hidden_size=768, num_attention_heads=12,
             intermediate_size=3072, num_hidden_layers=1)
    path = _saved(hf, tmp_path, "folder")
    args = run_finetune.get_args_parser().parse_args(["--eval", "True", "--finetune", str(path)])
    checkpoint = _evaluated_checkpoint(args, given=set())
    assert (args.model, args.input_size, args.num_frames, args.stage_depths) == ("videomae_base_patch16_160", 32, 4, [1])
    model = run_finetune.build_model(args, SimpleNamespace(num_outputs=5), checkpoint).eval()
    x, x_hf = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x_hf).logits, atol=1e-4, rtol=0)

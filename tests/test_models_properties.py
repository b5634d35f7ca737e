"""Properties the paper's model has and the release's pre-training model lacks."""
import pytest
import timm
import torch

import models
from models import count_macs, count_params

TINY = dict(img_size=64, embed_dim=64, num_heads=4, stage_depths=(2, 2, 2), num_bottleneck_tokens=4)
TINY_PRETRAIN = dict(img_size=64, encoder_embed_dim=64, encoder_num_heads=4, stage_depths=(2, 2, 2),
                     num_bottleneck_tokens=4, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


SCORE_BIAS = "mlp.fc2.bias"  # of the spatial bottleneck's scoring MLP (models/layers.SpatialBottleneck)
SCORE_BIAS_OWNER = "spatial_downsamples."


def parameters_without_gradient(model):
    """Names of the parameters whose gradient is missing or zero, after a backward pass.

    The bottleneck's score bias shifts every score of a softmax over spatial positions by the same
    amount: its gradient is zero by construction (up to rounding), so it is checked to be ~0 instead.
    """
    shift_invariant = [n for n, _ in model.named_parameters() if SCORE_BIAS_OWNER in n and n.endswith(SCORE_BIAS)]
    assert shift_invariant, "the bottleneck's score bias was not found"
    for n, p in model.named_parameters():
        if n in shift_invariant:
            assert p.grad is None or p.grad.abs().max() < 1e-6, n
    return [n for n, p in model.named_parameters()
            if n not in shift_invariant and (p.grad is None or not p.grad.abs().sum() > 0)]


def tube_mask(batch, t, s, ratio, generator):
    masked = int(ratio * s)
    mask = torch.zeros(batch, s, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(s, generator=generator)[:masked]] = True
    return mask.unsqueeze(1).expand(batch, t, s).reshape(batch, t * s)


def pixel_mask(mask, grid, tubelet=2, patch=16):
    t, h, w = grid
    m = mask.view(-1, 1, t, 1, h, 1, w, 1).float()
    m = m.expand(-1, 1, t, tubelet, h, patch, w, patch)
    return m.reshape(mask.shape[0], 1, t * tubelet, h * patch, w * patch).bool()


def test_masked_pixels_cannot_influence_encoder_or_reconstruction():
    torch.manual_seed(0)
    model = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PRETRAIN).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 64, 64)
    mask = tube_mask(2, 8, 16, 0.75, g)
    x2 = torch.where(pixel_mask(mask, (8, 4, 4)), torch.randn_like(x) * 5, x)
    assert not torch.equal(x, x2)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x, mask), model.encoder(x2, mask), atol=0, rtol=0)
        torch.testing.assert_close(model(x, mask), model(x2, mask), atol=0, rtol=0)
        # and the visible pixels do matter
        x3 = torch.where(pixel_mask(mask, (8, 4, 4)), x, x + 1)
        assert not torch.allclose(model.encoder(x, mask), model.encoder(x3, mask))


@pytest.mark.parametrize("name,kwargs", [
    ("pretrain_svfap_base_patch16_160", {}),
    ("pretrain_svfap_base_patch16_160", dict(TINY_PRETRAIN, num_bottleneck_tokens=[4, 2])),
])
def test_every_parameter_gets_a_gradient(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).train()
    size = kwargs.get("img_size", 160)
    s = (size // 16) ** 2
    x = torch.randn(1, 3, 16, size, size)
    mask = tube_mask(1, 8, s, 0.9 if size == 160 else 0.75, torch.Generator().manual_seed(1))
    out = model(x, mask)
    out.pow(2).mean().backward()
    no_grad = parameters_without_gradient(model)
    assert no_grad == [], f"{len(no_grad)} parameters without gradient, e.g. {no_grad[:5]}"


def test_finetune_model_every_parameter_gets_a_gradient():
    model = timm.create_model("svfap_base_patch16_160", init_scale=1.0, **TINY).train()
    model(torch.randn(2, 3, 16, 64, 64)).sum().backward()
    assert parameters_without_gradient(model) == []


# docs/model.md: params (M) and GMACs at 1x3x16x160x160.
SIZES = [
    ("svfap_base_patch16_160", {}, 77.64, 43.5),
    ("svfap_small_patch16_160", {}, 29.68, 18.0),
    ("videomae_base_patch16_160", {}, 86.2, 80.7),
    ("svfap_base_patch16_160", dict(stage_depths=(24,)), 76.4, 76.8),
    ("svfap_base_patch16_160", dict(stage_depths=(12, 8, 4), use_bottleneck=False), 77.5, 53.1),
    ("svfap_base_patch16_160", dict(use_temporal_pyramid=False), 76.6, 51.1),
    ("svfap_base_patch16_160", dict(num_bottleneck_tokens=4), 77.6, 43.1),
    ("svfap_base_patch16_160", dict(num_bottleneck_tokens=16), 77.6, 44.4),
]


@pytest.mark.parametrize("name,kwargs,params_m,gmacs", SIZES)
def test_params_and_gmacs_match_paper(name, kwargs, params_m, gmacs):
    model = timm.create_model(name, num_classes=7, **kwargs)
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert count_macs(model, torch.randn(1, 3, 16, 160, 160)) / 1e9 == pytest.approx(gmacs, rel=0.03)


def test_pretraining_cost_matches_paper():
    model = timm.create_model("pretrain_svfap_base_patch16_160")
    mask = tube_mask(1, 8, 100, 0.9, torch.Generator().manual_seed(0))
    assert count_macs(model, torch.randn(1, 3, 16, 160, 160), mask) / 1e9 == pytest.approx(12.9, rel=0.03)


def test_create_model_keywords_override_defaults():
    model = timm.create_model("svfap_small_patch16_160", num_classes=3, stage_depths=(2, 1), img_size=64,
                              num_bottleneck_tokens=2, temporal_kernel_size=4, all_frames=16)
    assert model.head.out_features == 3 and model.embed_dim == 384
    assert model.stage_depths == [2, 1] and len(model.blocks) == 3
    assert model.spatial_downsamples[0].num_tokens == 2
    assert model.temporal_downsamples[0].kernel_size == (4,)
    assert model(torch.randn(1, 3, 16, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize("kwargs", [
    dict(stage_depths=(2,)),
    dict(stage_depths=(2, 1, 1), use_bottleneck=False),
    dict(stage_depths=(2, 1, 1), use_temporal_pyramid=False),
    dict(temporal_downsample="avg"),
    dict(temporal_downsample="max"),
    dict(fuse_stages=True),
    dict(use_learnable_pos_emb=True),
    dict(init_values=0.1),
])
def test_ablation_variants_run(kwargs):
    model = timm.create_model("svfap_base_patch16_160", num_classes=5, **{**TINY, **kwargs})
    logits, feats = model(torch.randn(2, 3, 16, 64, 64), save_feature=True)
    assert logits.shape == (2, 5) and feats.shape == (2, 64)


def test_temporal_downsampling_variants_differ():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 64, 64)
    outs = {}
    for mode in ("avg", "max"):
        torch.manual_seed(0)
        model = timm.create_model("svfap_base_patch16_160", temporal_downsample=mode, **TINY).eval()
        outs[mode] = model(x, save_feature=True)[1]
    assert not torch.allclose(outs["avg"], outs["max"])


def test_keep_temporal_dim_gives_one_output_per_frame():
    model = timm.create_model("svfap_base_patch16_160", num_classes=5, keep_temporal_dim=True, init_scale=1.0,
                              **TINY).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    logits, feats = model(x, save_feature=True)
    assert logits.shape == (2, 16 * 5) and feats.shape == (2, 16, 64)
    per_frame = logits.view(2, 16, 5)
    # the last stage has 2 time steps, each covering 8 frames
    torch.testing.assert_close(per_frame[:, :8], per_frame[:, :1].expand(-1, 8, -1))
    assert not torch.allclose(per_frame[:, 0], per_frame[:, 8])


def test_head_activation_and_init_scale():
    model = timm.create_model("svfap_base_patch16_160", num_classes=5, head_activation_func="sigmoid",
                              init_scale=0.001, **TINY).eval()
    out = model(torch.randn(1, 3, 16, 64, 64))
    assert ((out > 0) & (out < 1)).all()
    assert model.head.weight.std().item() == pytest.approx(0.02 * 0.001, rel=0.3)


def test_non_tube_mask_is_rejected():
    model = timm.create_model("pretrain_svfap_base_patch16_160", **TINY_PRETRAIN).eval()
    mask = torch.zeros(1, 128, dtype=torch.bool)
    mask[0, torch.randperm(128)[:96]] = True
    with pytest.raises((RuntimeError, ValueError)):
        model(torch.randn(1, 3, 16, 64, 64), mask)


def test_wrong_input_size_has_a_clear_error():
    model = timm.create_model("svfap_base_patch16_160", **TINY)
    with pytest.raises(ValueError, match="tokens"):
        model(torch.randn(1, 3, 16, 96, 96))


def test_pretrained_download_is_refused():
    with pytest.raises(ValueError, match="checkpoint"):
        timm.create_model("svfap_base_patch16_160", pretrained=True)


def test_registered_names():
    listed = set(timm.list_models("*svfap*")) | set(timm.list_models("*videomae*"))
    assert set(models.MODEL_NAMES) <= listed


def _linear_stats(linear):
    w = linear.weight.detach()
    fan_out, fan_in = w.shape
    return w, fan_in, fan_out


def test_pretraining_initialisation_is_the_releases():
    """modeling_pretrain.py: every encoder and decoder nn.Linear xavier-uniform (std
    sqrt(2 / (fan_in + fan_out)), bound sqrt(6 / (fan_in + fan_out))) with zero bias,
    encoder_to_decoder left at PyTorch's default (uniform, bound 1 / sqrt(fan_in)), the mask token
    normal(0, 0.02) truncated at +-0.02, LayerNorms (1, 0)."""
    torch.manual_seed(0)
    model = timm.create_model("pretrain_svfap_base_patch16_160", img_size=64, encoder_embed_dim=192,
                              encoder_num_heads=4, stage_depths=(2, 1, 1), num_bottleneck_tokens=4,
                              decoder_embed_dim=96, decoder_num_heads=2, decoder_depth=1)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert any(n.startswith("encoder.spatial_downsamples") for n, _ in linears)
    for name, linear in linears:
        w, fan_in, fan_out = _linear_stats(linear)
        if name == "encoder_to_decoder":
            bound = 1 / fan_in ** 0.5
            assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
            assert linear.bias is None
            continue
        assert name.startswith(("encoder.", "decoder.")), name
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert w.abs().max() <= bound, name
        xavier_std = (2 / (fan_in + fan_out)) ** 0.5
        assert w.std().item() == pytest.approx(xavier_std, rel=0.1 if w.numel() < 4000 else 0.05), name
        assert linear.bias is None or not linear.bias.any(), name
    token = model.mask_token.detach()
    # normal(0, s) truncated at +-s has std s * sqrt(1 - 2 phi(1) / (Phi(1) - Phi(-1))) = 0.5376 s
    assert token.abs().max() <= 0.02 and token.std().item() == pytest.approx(0.02 * 0.5376, rel=0.25)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert (m.weight == 1).all() and not m.bias.any()


def test_finetuning_initialisation_is_the_releases():
    """modeling_finetune.py: nn.Linear weights truncated normal with std 0.02, zero bias; the new
    head scaled by init_scale."""
    torch.manual_seed(0)
    model = timm.create_model("svfap_base_patch16_160", num_classes=5, init_scale=0.001, **TINY)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name != "head":
            w, _, _ = _linear_stats(m)
            assert w.std().item() == pytest.approx(0.02, rel=0.1 if w.numel() < 4000 else 0.05), name
            assert m.bias is None or not m.bias.any(), name
    assert model.head.weight.abs().max() <= 2 * 0.001

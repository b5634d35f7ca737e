"""Eager autocast on CUDA: each block casts its weights to the compute dtype with one multi-tensor
copy (and their gradients back with one) instead of one cast per weight, LayerNorm and softmax stay
in the compute dtype. No GPU here, so the CUDA path is switched on for the CPU
(``models.layers.CAST_ONCE_DEVICES``) and checked against autocast's own casts: the same numbers to
bf16 rounding (the LayerNorm weights are rounded to bf16 too), far fewer casts, and LoRA adapters
and activation checkpointing inside the blocks still work."""
import numpy as np
import pytest
import timm
import torch
from torch.profiler import ProfilerActivity, profile

import models  # noqa: F401
from datasets.masking import TubeMaskGenerator
from models import layers

TINY = dict(img_size=32, num_frames=8, stage_depths=(2, 1, 1), embed_dim=48, num_heads=3)


def pretrain_model():
    torch.manual_seed(0)
    model = timm.create_model("pretrain_svfap_tiny_patch16_160", decoder_embed_dim=32, decoder_num_heads=2,
                              decoder_depth=1, **TINY)
    with torch.no_grad():  # weights away from their initial ones and zeros, so that every rounding shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def inputs(model):
    generate = TubeMaskGenerator(model.encoder.grid_size, 0.75)
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(np.stack([generate(rng) for _ in range(2)]))
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1)), mask, generate.num_masked


def loss_and_grads(model, amp=torch.bfloat16, casts=None):
    """The loss (mean squared reconstruction) and gradients of one step; with ``casts`` a list, the
    step's ``aten::_to_copy`` and ``aten::_foreach_copy_`` counts are appended to it."""
    x, mask, count = inputs(model)
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = model(x, mask, num_masked=count)
        loss = out.float().square().mean()
        loss.backward()
    if casts is not None:
        names = [e.name for e in prof.events()]
        casts.append((names.count("aten::_to_copy"), names.count("aten::_foreach_copy_")))
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def relative(a, b):
    return {n: ((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-12)).item() for n in b
            if b[n].norm() > 1e-6}  # the bottleneck's score bias has no gradient (shift-invariant softmax)


def test_cast_once_gives_autocasts_numbers_with_far_fewer_casts(monkeypatch):
    model = pretrain_model()
    exact_loss, exact = loss_and_grads(model, amp=None)
    counts = []
    auto_loss, auto = loss_and_grads(model, casts=counts)
    monkeypatch.setattr(layers, "CAST_ONCE_DEVICES", ("cuda", "cpu"))
    once_loss, once = loss_and_grads(model, casts=counts)
    blocks = len(model.encoder.blocks) + len(model.decoder.blocks) + len(model.encoder.spatial_downsamples)
    (auto_casts, auto_multi), (once_casts, once_multi) = counts
    assert auto_multi == 0 and once_multi == 2 * blocks  # one copy in, one for the gradients, per block
    assert once_casts < auto_casts / 4, counts
    # As close to the fp32 step as autocast's own casts are (its bf16 rounding is the yardstick).
    bf16_error = max(relative(auto, exact).values())
    assert abs(once_loss - auto_loss) <= 2 * abs(auto_loss - exact_loss) + 1e-6 * exact_loss
    assert max(relative(once, exact).values()) < 2 * bf16_error
    assert max(relative(once, auto).values()) < 2 * bf16_error
    assert set(once) == set(auto)


def test_cast_once_with_checkpointing_and_fp32(monkeypatch):
    """Recomputed blocks cast again in the backward pass, to the same gradients; without autocast
    nothing is cast and the step is exactly the plain one."""
    monkeypatch.setattr(layers, "CAST_ONCE_DEVICES", ("cuda", "cpu"))
    model = pretrain_model()
    plain_loss, plain = loss_and_grads(model)
    model.set_grad_checkpointing(True)
    loss, grads = loss_and_grads(model)
    torch.testing.assert_close(loss, plain_loss)
    for name, g in plain.items():
        torch.testing.assert_close(grads[name], g)
    model.set_grad_checkpointing(False)
    counts = []
    fp32_loss, fp32 = loss_and_grads(model, amp=None, casts=counts)
    monkeypatch.setattr(layers, "CAST_ONCE_DEVICES", ("cuda",))
    ref_loss, ref = loss_and_grads(model, amp=None, casts=counts)
    assert counts[0] == counts[1] and counts[0][1] == 0 and fp32_loss == ref_loss
    assert all(torch.equal(fp32[n], ref[n]) for n in ref)


def test_cast_once_leaves_lora_adapters_training_alone(monkeypatch):
    """LoRA (peft) layers inside the blocks: the frozen weights are cast without gradients, the
    adapters train, with the gradients of autocast's per-tensor casts."""
    from models.tuning import Tuning, apply_tuning
    torch.manual_seed(0)
    model = timm.create_model("svfap_tiny_patch16_160", num_classes=3, init_scale=1.0, **TINY)
    apply_tuning(model, Tuning(mode="lora", lora_rank=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # peft starts B at zero: the adapters' gradients would all be alike
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))

    def grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    auto = grads()
    monkeypatch.setattr(layers, "CAST_ONCE_DEVICES", ("cuda", "cpu"))
    once = grads()
    assert set(once) == set(auto) and any("lora_A" in n for n in once) and not any("qkv.base_layer" in n for n in once)
    assert max(relative(once, auto).values()) < 0.05


@pytest.mark.parametrize("mode", ["conv", "avg"])
def test_temporal_downsampling_as_one_matmul_is_the_convolution(mode):
    """The strided temporal convolution, computed as one matmul of each position's time steps, equals
    nn.Conv1d over the transposed tokens; pooling goes through its module unchanged."""
    torch.manual_seed(0)
    op = torch.nn.Conv1d(16, 16, 2, stride=2) if mode == "conv" else torch.nn.AvgPool1d(2, 2)
    x = torch.randn(2, 8, 5, 16)
    ref = op(x.permute(0, 2, 3, 1).reshape(10, 16, 8)).reshape(2, 5, 16, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(layers.temporal_downsample(op, x), ref, atol=1e-6, rtol=1e-5)

"""The opt-in torch.compile path: both models trace as one graph (no graph breaks, static shapes
under tube masking) and give the same numbers as eager."""
import shutil

import numpy as np
import pytest
import timm
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import models  # noqa: F401
from datasets.masking import TubeMaskGenerator

needs_compiler = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                    reason="torch.compile on CPU needs a C compiler")
TINY = dict(img_size=32, stage_depths=(1, 1, 1), embed_dim=48, num_heads=3)


def finetune_model():
    torch.manual_seed(0)
    return timm.create_model("svfap_tiny_patch16_160", init_scale=1.0, num_classes=4, **TINY)


def pretrain_model():
    torch.manual_seed(0)
    return timm.create_model("pretrain_svfap_tiny_patch16_160", decoder_embed_dim=32, decoder_num_heads=2,
                             decoder_depth=1, **TINY)


def tube_masks(model, batch, seed):
    generate = TubeMaskGenerator(model.encoder.grid_size, 0.75)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([generate(rng) for _ in range(batch)])), generate.num_masked


def eager_and_compiled(model, backend, inputs, loss):
    """Outputs and gradients of ``loss(model(*inputs))``, eager then compiled with fullgraph=True."""
    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend=backend)):
        model.zero_grad()
        out = run(*inputs)
        loss(out).backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    return results


def assert_same_numbers(eager, compiled):
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-4)
    for g, e in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_models_trace_as_one_graph_with_static_shapes():
    """fullgraph=True fails on any graph break; two batches with different tube masks of the same
    ratio reuse the one graph (the masked count is a static shape, read from nothing). The traced
    forward and backward (aot_eager: traced, run by eager kernels) give eager's numbers."""
    x = torch.randn(2, 3, 16, 32, 32)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    eager, compiled = eager_and_compiled(finetune_model(), counter, (x,), lambda out: out.sum())
    assert counter.frame_count == 1
    assert_same_numbers(eager, compiled)

    torch._dynamo.reset()
    model = pretrain_model()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    for seed in (0, 1):
        mask, count = tube_masks(model, 2, seed)
        out = compiled(x, mask, num_masked=count)
        assert out.shape == (2, count, 2 * 16 * 16 * 3)
        out.sum().backward()
    assert counter.frame_count == 1
    eager, compiled = eager_and_compiled(model, "aot_eager", (x, mask, count), lambda out: out.square().mean())
    assert_same_numbers(eager, compiled)


@needs_compiler
def test_compiled_training_step_matches_eager():
    model = finetune_model()
    x = torch.randn(2, 3, 16, 32, 32)
    eager_out = model(x)
    eager_out.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-4)
    for g, p in zip(eager_grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


@needs_compiler
def test_compiled_pretraining_forward_matches_eager():
    """The inductor-compiled masked autoencoder (its forward: the backward's kernels take minutes to
    build on a small CPU, and the traced backward is checked above) against eager, to fp32 rounding."""
    model = pretrain_model()
    x = torch.randn(2, 3, 16, 32, 32)
    mask, count = tube_masks(model, 2, 0)
    with torch.no_grad():
        eager = model(x, mask)
        compiled = torch.compile(model, fullgraph=True)(x, mask, num_masked=count)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)


@needs_compiler
def test_the_entry_points_compile_in_the_chosen_mode():
    """--compile True --compile_mode reduce-overhead (CUDA graphs on a GPU; on CPU inductor alone)
    wraps the model as the training loop calls it, with eager's outputs; an unknown mode is refused."""
    from argparse import Namespace

    from engine.runtime import compiled, wrap_model

    model = finetune_model().eval()
    x = torch.randn(2, 3, 16, 32, 32)
    wrapped = wrap_model(model, Namespace(distributed=False, compile=True, compile_mode="reduce-overhead"), "cpu")
    assert wrapped is not model and wrapped._orig_mod is model
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="reduce-overhead"):
        compiled(model, "fastest")

"""The opt-in torch.compile path gives the same numbers as eager."""
import shutil

import pytest
import timm
import torch

import models  # noqa: F401


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile on CPU needs a C compiler")
def test_compiled_training_step_matches_eager():
    torch.manual_seed(0)
    model = timm.create_model("svfap_tiny_patch16_160", img_size=32, stage_depths=(1, 1, 1), init_scale=1.0,
                              embed_dim=48, num_heads=3, num_classes=4)
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

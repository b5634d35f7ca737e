"""Multiply-accumulate counting with torch's own flop counter (attention included)."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model, *inputs, **kwargs) -> int:
    """MACs of one forward pass (FLOPs / 2, as the paper's GMACs)."""
    was_training = model.training
    model.eval()
    try:
        # The CPU fused attention kernel has no flop formula; the math path counts its matmuls.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(*inputs, **kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())

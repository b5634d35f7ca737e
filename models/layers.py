"""Building blocks of TPSBT and its decoder, with the parameter layout of the SVFAP release.

Parameter names (``qkv`` + ``q_bias``/``v_bias``, ``cross_norm1``...) follow the release so that
its checkpoints load unchanged; attention goes through ``scaled_dot_product_attention``.
"""
import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.beit import Block as BeitBlock


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoid table ``(1, N, C)``: sin on even, cos on odd channels."""
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


def init_weights(module, linear_init=None):
    """The release's initialisation, for ``model.apply``: Linear weights by ``linear_init``
    (truncated normal, std 0.02, by default), zero biases, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        (linear_init or partial(trunc_normal_, std=0.02))(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def run_block(block, *inputs, checkpoint=False):
    """``block(*inputs)``, recomputed in the backward pass instead of stored when ``checkpoint``."""
    if checkpoint and block.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


class Block(BeitBlock):
    """Pre-LN transformer block (self-attention, MLP): timm's BEiT block, whose parameters (an
    unbiased ``qkv`` plus ``q_bias``/``v_bias``, layer scales ``gamma_1``/``gamma_2``) are named as
    in the release."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 init_values=0.0, norm_layer=nn.LayerNorm):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, mlp_ratio=mlp_ratio, proj_drop=drop,
                         attn_drop=attn_drop, drop_path=drop_path, init_values=init_values or None,
                         norm_layer=norm_layer)


class CrossAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context``; the release's layout: an unbiased ``q``
    with ``q_bias``, an unbiased ``kv`` whose bias is ``(0, v_bias)`` (keys are never biased)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, context):
        kv_bias = None if self.v_bias is None else torch.cat((torch.zeros_like(self.v_bias), self.v_bias))
        q = rearrange(F.linear(x, self.q.weight, self.q_bias), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(F.linear(context, self.kv.weight, kv_bias), "b n (two h d) -> two b h n d", two=2,
                         h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(x, "b h n d -> b n (h d)")))


class CrossSelfBlock(Block):
    """Cross-attention to ``context``, then self-attention and MLP over the queries.

    Used both ways round in TPSBT: bottleneck tokens attending to the stage's tokens, and
    (the last block of a stage, the "reverse" block) the stage's tokens attending to the
    bottleneck tokens.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 init_values=0.0, norm_layer=nn.LayerNorm):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path, init_values, norm_layer)
        self.cross_norm1 = norm_layer(dim)
        self.cross_norm2 = norm_layer(dim)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.gamma_0 = nn.Parameter(init_values * torch.ones(dim)) if init_values else None
        self.drop_path0 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, context):
        y = self.cross_attn(self.cross_norm1(x), self.cross_norm2(context))
        x = x + self.drop_path0(y if self.gamma_0 is None else self.gamma_0 * y)
        return super().forward(x)


class SpatialBottleneck(nn.Module):
    """Pools the S spatial tokens of every time step into G learned weighted sums.

    Scores come from a small MLP on the normed tokens; the softmax runs over the spatial
    tokens of one time step, so each bottleneck token is a convex mix of that time step.
    """

    def __init__(self, dim, num_tokens=8, hidden_dim=128, norm_layer=nn.LayerNorm):
        super().__init__()
        self.num_tokens = num_tokens
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, hidden_dim, out_features=num_tokens, act_layer=nn.GELU)

    def forward(self, x):
        """``x``: ``(B, T, S, C)`` → ``(B, T * G, C)`` in (t, g) order."""
        weights = self.mlp(self.norm(x)).softmax(dim=2)  # (B, T, S, G)
        tokens = torch.einsum("btsg,btsc->btgc", weights, x)
        return tokens.flatten(1, 2)


def temporal_downsample(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1-D op along time for every spatial position: ``(B, T, S, C)`` → ``(B, T/k, S, C)``."""
    b, _, s, _ = x.shape
    y = op(rearrange(x, "b t s c -> (b s) c t"))
    return rearrange(y, "(b s) c t -> b t s c", b=b, s=s)


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, img_size=160, patch_size=16, in_chans=3, embed_dim=512, num_frames=16, tubelet_size=2):
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if num_frames % tubelet_size or img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"input {num_frames}x{img_size} is not divisible into "
                             f"{tubelet_size}x{patch_size}x{patch_size} tubelets")
        self.img_size, self.num_frames = img_size, num_frames
        self.grid_size = (num_frames // tubelet_size, img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = math.prod(self.grid_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)

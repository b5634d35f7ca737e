"""Building blocks of TPSBT and its decoder, with the parameter layout of the SVFAP release.

Parameter names (``qkv`` + ``q_bias``/``v_bias``, ``cross_norm1``...) follow the release so that
its checkpoints load unchanged; attention goes through ``scaled_dot_product_attention``.

Eager steps under autocast on a GPU are bound by the host's per-op cost, and many of their kernels
are dtype casts: autocast casts each weight (and each weight gradient) on its own and runs
LayerNorm and softmax in fp32 on a bf16 residual stream. So on CUDA a block's weights are cast with
one multi-tensor copy when the block is entered (their gradients with one when it is left),
LayerNorm and softmax read and write the compute dtype (their kernels accumulate in fp32), and
layers whose dropout is 0 do not call it. Compiled steps keep autocast's own casts: inductor fuses
them.
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


# Where a block's weights are cast at once: on CUDA each per-tensor cast is a kernel launch and a
# few host ops, and the multi-tensor copy one kernel. On CPU the multi-tensor copy is a loop of
# per-tensor copies, so autocast's own casts cost less host time there (and CPU autocast keeps
# LayerNorm in bf16 already).
CAST_ONCE_DEVICES = ("cuda",)


def cast_once_dtype(x: torch.Tensor):
    """The dtype a block entered with ``x`` casts its weights to at once: autocast's, when it is on
    for ``x``'s device, that device is in :data:`CAST_ONCE_DEVICES` and the step runs eagerly."""
    kind = x.device.type
    if kind not in CAST_ONCE_DEVICES or torch.compiler.is_compiling() or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def _contiguous_strides(shape):
    strides, size = [], 1
    for n in reversed(shape):
        strides.append(size)
        size *= n
    return tuple(reversed(strides))


def _cast_all(tensors, dtype):
    """Copies of ``tensors`` in ``dtype``: views of one new buffer, filled by one multi-tensor copy."""
    buffer = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=tensors[0].device)
    out, offset = [], 0
    for t in tensors:
        out.append(buffer.as_strided(t.shape, _contiguous_strides(t.shape), offset))
        offset += t.numel()
    torch._foreach_copy_(out, list(tensors))
    return out


class _CastAll(torch.autograd.Function):
    """Tensors in ``dtype``, their gradients back in the tensors' dtype: one multi-tensor copy each
    way (the values of autocast's per-tensor casts)."""

    @staticmethod
    def forward(ctx, dtype, *tensors):
        ctx.set_materialize_grads(False)
        ctx.source_dtype = tensors[0].dtype
        return tuple(_cast_all(tensors, dtype))

    @staticmethod
    def backward(ctx, *grads):
        wanted = [i for i, g in enumerate(grads) if g is not None and ctx.needs_input_grad[i + 1]]
        result = [None] * len(grads)
        if wanted:
            for i, g in zip(wanted, _cast_all([grads[i] for i in wanted], ctx.source_dtype)):
                result[i] = g
        return (None, *result)


def _slots(module, dtype):
    """``(dict, key, tensor)`` of the module's fp32 parameters and buffers to cast to ``dtype``: all,
    but a LayerNorm's only when it is :class:`LayerNorm` and the dtype bf16 (with fp16 autocast keeps
    the norm in fp32)."""
    slots = []
    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm) and not (isinstance(sub, LayerNorm) and dtype == torch.bfloat16):
            continue
        for store in (sub._parameters, sub._buffers):
            slots += [(store, key, t) for key, t in store.items() if t is not None and t.dtype == torch.float32]
    return slots


def call_in_dtype(module, *inputs):
    """``module(*inputs)``; under eager autocast with the module's weights cast to the compute dtype
    at once instead of one by one where each is used.

    The cast tensors stand in for the parameters in the modules' own stores while the call runs
    (what ``torch.func.functional_call`` does, without its per-call bookkeeping, which costs more
    host time than the casts it would save), so hooks and adapters inside still run.
    """
    dtype = cast_once_dtype(inputs[0])
    slots = _slots(module, dtype) if dtype is not None else None
    if not slots:
        return module(*inputs)
    # Frozen parameters are cast outside autograd: as outputs of the cast they would require gradients,
    # and the matmuls would compute their (unused) weight gradients. Buffers ride along at no cost.
    frozen = [i for i, (_, _, t) in enumerate(slots) if isinstance(t, nn.Parameter) and not t.requires_grad]
    rest = [i for i in range(len(slots)) if i not in frozen]
    cast = [None] * len(slots)
    if rest:
        for i, t in zip(rest, _CastAll.apply(dtype, *(slots[i][2] for i in rest))):
            cast[i] = t
    if frozen:
        with torch.no_grad():
            for i, t in zip(frozen, _cast_all([slots[i][2] for i in frozen], dtype)):
                cast[i] = t
    for (store, key, _), t in zip(slots, cast):
        store[key] = t
    try:
        return module(*inputs)
    finally:
        for store, key, t in slots:
            store[key] = t


def run_block(block, *inputs, checkpoint=False):
    """``block(*inputs)`` (through :func:`call_in_dtype`), recomputed in the backward pass instead of
    stored when ``checkpoint``."""
    if checkpoint and block.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(call_in_dtype, block, *inputs, use_reentrant=False)
    return call_in_dtype(block, *inputs)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that, under autocast with its weights already in the input's dtype (cast by
    :func:`call_in_dtype`), normalises in that dtype instead of casting its input and output to and
    from fp32; the kernels accumulate in fp32 either way."""

    def forward(self, x):
        if self.weight is not None and x.dtype == self.weight.dtype != torch.float32:
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return super().forward(x)


def dropout(p):
    """``nn.Dropout(p)``, or ``nn.Identity`` when ``p`` is 0 (a dropout of 0 is still an op per call)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class Block(BeitBlock):
    """Pre-LN transformer block (self-attention, MLP): timm's BEiT block, whose parameters (an
    unbiased ``qkv`` plus ``q_bias``/``v_bias``, layer scales ``gamma_1``/``gamma_2``) are named as
    in the release."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 init_values=0.0, norm_layer=nn.LayerNorm):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, mlp_ratio=mlp_ratio, proj_drop=drop,
                         attn_drop=attn_drop, drop_path=drop_path, init_values=init_values or None,
                         norm_layer=norm_layer)
        self.attn.proj_drop, self.mlp.drop1, self.mlp.drop2 = dropout(drop), dropout(drop), dropout(drop)


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
        # The keys' zero bias, as BEiT's attention keeps it: one concatenation builds kv's bias.
        self.register_buffer("k_bias", torch.zeros(dim) if qkv_bias else None, persistent=False)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = dropout(proj_drop)

    def forward(self, x, context):
        kv_bias = None if self.v_bias is None else torch.cat((self.k_bias, self.v_bias))
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
        self.mlp = Mlp(dim, hidden_dim, out_features=num_tokens, act_layer=nn.GELU, drop=0.0)
        self.mlp.drop1 = self.mlp.drop2 = nn.Identity()

    def forward(self, x):
        """``x``: ``(B, T, S, C)`` → ``(B, T * G, C)`` in (t, g) order."""
        scores = self.mlp(self.norm(x))  # (B, T, S, G)
        # The softmax in the scores' dtype (autocast would cast them to fp32 and the weights back).
        weights = scores.softmax(dim=2, dtype=scores.dtype)
        return torch.matmul(weights.transpose(2, 3), x).flatten(1, 2)


def temporal_downsample(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1-D op along time for every spatial position: ``(B, T, S, C)`` → ``(B, T/k, S, C)``.

    A strided ``nn.Conv1d`` (kernel = stride = k) is one matmul of each position's k consecutive
    time steps, (t, c)-flattened, with the kernel reordered alike: fewer ops than a convolution of
    the transposed tokens, with the same weights.
    """
    b, t, s, c = x.shape
    if isinstance(op, nn.Conv1d) and op.kernel_size[0] == op.stride[0] and op.padding[0] == 0:
        k = op.kernel_size[0]
        steps = x.reshape(b, t // k, k, s, c).transpose(2, 3).reshape(b, t // k, s, k * c)
        return F.linear(steps, op.weight.transpose(1, 2).reshape(op.out_channels, k * c), op.bias)
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

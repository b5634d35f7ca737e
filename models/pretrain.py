"""SVFAP masked video autoencoder: TPSBT encoder on visible tokens + lightweight decoder.

Tube masking keeps the same spatial positions at every time step, so the visible tokens form a
``(B, T, S_visible, C)`` grid on which the temporal pyramid and bottleneck run unchanged. The
reverse block of each later stage reads the bottleneck tokens only (paper Eq. 8), so nothing of
the masked pixels reaches the encoder.
"""
from functools import partial

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from .layers import Block, LayerNorm, init_weights, run_block, sinusoid_table
from .tpsbt import TPSBTTrunk


def split_visible(mask: torch.Tensor, num_time_steps: int, device=None, num_masked: int | None = None):
    """Indices of visible and masked tokens, each in increasing order, without Python loops.

    ``mask``: bool ``(B, N)``, True = masked, the same count per sample (tube masking). ``num_masked``,
    that count when the caller knows it (from the mask ratio), keeps the shapes static: nothing is
    read from the mask, so there is no host sync and no graph break under ``torch.compile``.
    Without it the count is read from the mask (a host sync when the mask lives on a GPU). Masks on
    the CPU are checked in eager mode; ``device`` receives the indices.
    """
    b, n = mask.shape
    t = num_time_steps
    if num_masked is None:
        num_masked = int(mask[0].sum())
    if num_masked % t:
        raise ValueError(f"{num_masked} masked tokens are not a tube mask over {t} time steps")
    if mask.device.type == "cpu" and not torch.compiler.is_compiling():
        if not (mask.sum(1) == num_masked).all():
            raise ValueError(f"masks do not all hide {num_masked} tokens")
        if not (mask.view(b, t, -1) == mask.view(b, t, -1)[:, :1]).all():
            raise ValueError("mask is not a tube mask: visible positions differ between time steps")
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first, both ascending
    if device is not None:
        order = order.to(device, non_blocking=True)
    return order[:, : n - num_masked], order[:, n - num_masked:]


def _gather(x, index):
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class PretrainTPSBTEncoder(TPSBTTrunk):
    """TPSBT on the visible tokens; the stages are fused (Eq. 10) and normed (``norm``). Its Linear
    weights start xavier-uniform, as the release's pre-training encoder (the fine-tuning model's
    start truncated-normal, std 0.02)."""

    def __init__(self, num_classes=0, **kwargs):
        super().__init__(**kwargs)
        norm_layer = kwargs.get("norm_layer") or partial(LayerNorm, eps=1e-6)
        self.norm = norm_layer(self.embed_dim)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(partial(init_weights, linear_init=nn.init.xavier_uniform_))

    def forward(self, x, mask, visible_index=None):
        """Clip ``(B, C, T, H, W)`` and mask ``(B, N)`` → fused visible tokens ``(B, N_visible, C)``."""
        tokens = self.embed(x)
        b, n, c = tokens.shape
        t = self.grid_size[0]
        if visible_index is None:
            # A non-tube mask would silently mix positions across time in the temporal conv.
            visible_index, _ = split_visible(mask, t, tokens.device)
        visible = _gather(tokens, visible_index)
        outs = self.forward_stages(visible.reshape(b, t, -1, c))
        return self.head(self.norm(self.fuse(outs).flatten(1, 2)))


class PretrainDecoder(nn.Module):
    """Plain blocks over all tokens; predicts pixels for the last ``return_token_num`` tokens."""

    def __init__(self, num_classes=1536, embed_dim=384, depth=4, num_heads=6, mlp_ratio=4.0, qkv_bias=True,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, init_values=0.0,
                 grad_checkpointing=False):
        super().__init__()
        norm_layer = norm_layer or partial(LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], init_values,
                  norm_layer) for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x, return_token_num):
        for blk in self.blocks:
            x = run_block(blk, x, checkpoint=self.grad_checkpointing)
        return self.head(self.norm(x[:, -return_token_num:]))


class PretrainTPSBT(nn.Module):
    """``model(x, mask)`` → reconstruction of the masked tubelets ``(B, N_masked, 3 * t * p * p)``.

    The encoder's width and heads are ``embed_dim`` / ``num_heads`` as in the fine-tuning model;
    the release's ``encoder_embed_dim`` / ``encoder_num_heads`` are accepted too.
    """

    def __init__(self, img_size=160, patch_size=16, in_chans=3, embed_dim=512, num_heads=8, decoder_num_classes=None,
                 decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6, mlp_ratio=4.0, qkv_bias=True,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, init_values=0.0,
                 use_learnable_pos_emb=False, tubelet_size=2, num_frames=16, stage_depths=(12, 6, 3),
                 num_bottleneck_tokens=8, temporal_kernel_size=2, temporal_downsample="conv",
                 use_temporal_pyramid=True, use_bottleneck=True, grad_checkpointing=False,
                 encoder_embed_dim=None, encoder_num_heads=None):
        super().__init__()
        embed_dim = encoder_embed_dim or embed_dim
        num_heads = encoder_num_heads or num_heads
        norm_layer = norm_layer or partial(LayerNorm, eps=1e-6)
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        if decoder_num_classes is None:
            decoder_num_classes = in_chans * tubelet_size * patch_size ** 2
        self.encoder = PretrainTPSBTEncoder(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, norm_layer=norm_layer, init_values=init_values,
            use_learnable_pos_emb=use_learnable_pos_emb, num_frames=num_frames, tubelet_size=tubelet_size,
            stage_depths=stage_depths, num_bottleneck_tokens=num_bottleneck_tokens,
            temporal_kernel_size=temporal_kernel_size, temporal_downsample=temporal_downsample,
            use_temporal_pyramid=use_temporal_pyramid, use_bottleneck=use_bottleneck,
            grad_checkpointing=grad_checkpointing)
        self.decoder = PretrainDecoder(
            decoder_num_classes, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, qkv_bias,
            drop_rate, attn_drop_rate, drop_path_rate, norm_layer, init_values, grad_checkpointing)
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("pos_embed", sinusoid_table(self.encoder.patch_embed.num_patches, decoder_embed_dim),
                             persistent=False)
        # The release's initialisation: xavier-uniform for the decoder's Linear weights, PyTorch's
        # default for encoder_to_decoder, and the mask token normal(0, 0.02) truncated at one std.
        self.decoder.apply(partial(init_weights, linear_init=nn.init.xavier_uniform_))
        trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    @property
    def num_patches(self):
        return self.encoder.patch_embed.num_patches

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "mask_token", "encoder.pos_embed"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable=True):
        self.encoder.grad_checkpointing = enable
        self.decoder.grad_checkpointing = enable

    def encode(self, x):
        """The encoder with nothing masked: fused, normed tokens ``(B, T, S, C)`` (what the decoder
        reads, for every position)."""
        t, h, w = self.encoder.grid_size
        mask = torch.zeros(x.shape[0], t * h * w, dtype=torch.bool)
        return self.encoder(x, mask).reshape(x.shape[0], t, h * w, -1)

    def forward(self, x, mask, num_masked=None):
        """``num_masked``: masked tokens per clip, when known (static shapes; see :func:`split_visible`)."""
        visible_index, masked_index = split_visible(mask, self.encoder.grid_size[0], x.device, num_masked)
        x_vis = self.encoder_to_decoder(self.encoder(x, mask, visible_index))
        b = x_vis.shape[0]
        pos = self.pos_embed.to(x_vis.dtype).expand(b, -1, -1)
        x_full = torch.cat([x_vis + _gather(pos, visible_index),
                            self.mask_token.to(x_vis.dtype) + _gather(pos, masked_index)], dim=1)
        return self.decoder(x_full, masked_index.shape[1])

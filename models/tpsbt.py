"""TPSBT: temporal pyramid + spatial bottleneck Transformer (SVFAP's encoder), fine-tuning form.

Stage 1 is a plain video ViT over all tokens. Every later stage halves time per spatial position
(temporal pyramid), pools each time step into G bottleneck tokens, refines them with cross-self
blocks that read the stage's tokens, and ends with a reverse block in which the stage's tokens
read the bottleneck. All blocks live in one flat ``blocks`` list, as in the release's checkpoints.
"""
from functools import partial

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from .layers import Block, CrossSelfBlock, LayerNorm, PatchEmbed3d, SpatialBottleneck, TemporalPool, call_in_dtype, \
    dropout, init_weights, run_block, sinusoid_table, temporal_downsample

_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "softmax": partial(torch.softmax, dim=-1)}


def _per_stage(value, num_later_stages, name):
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = values * num_later_stages
    if len(values) != num_later_stages:
        raise ValueError(f"{name} needs 1 or {num_later_stages} values, got {values}")
    return [int(v) for v in values]


class TPSBTTrunk(nn.Module):
    """Patch embedding, position table and the staged blocks, shared by fine-tuning and pre-training."""

    def __init__(self, img_size=160, patch_size=16, in_chans=3, embed_dim=512, num_heads=8, mlp_ratio=4.0,
                 qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None,
                 init_values=0.0, use_learnable_pos_emb=False, num_frames=16, tubelet_size=2,
                 stage_depths=(12, 6, 3), num_bottleneck_tokens=8, temporal_kernel_size=2,
                 temporal_downsample="conv", use_temporal_pyramid=True, use_bottleneck=True,
                 bottleneck_hidden_dim=128, grad_checkpointing=False):
        super().__init__()
        norm_layer = norm_layer or partial(LayerNorm, eps=1e-6)
        self.embed_dim = self.num_features = embed_dim
        self.stage_depths = [int(d) for d in stage_depths]
        self.grad_checkpointing = grad_checkpointing
        later = len(self.stage_depths) - 1
        self.use_temporal_pyramid = use_temporal_pyramid and later > 0
        self.use_bottleneck = use_bottleneck and later > 0
        self.temporal_kernel_size = int(temporal_kernel_size) if self.use_temporal_pyramid else 1

        self.num_frames = num_frames
        self.patch_embed = PatchEmbed3d(img_size, patch_size, in_chans, embed_dim, num_frames, tubelet_size)
        self.grid_size = self.patch_embed.grid_size
        if self.grid_size[0] % self.temporal_kernel_size ** later:
            raise ValueError(f"{self.grid_size[0]} token time steps cannot be downsampled "
                             f"{later} times by {self.temporal_kernel_size}")
        num_patches = self.patch_embed.num_patches
        if use_learnable_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", sinusoid_table(num_patches, embed_dim), persistent=False)
        self.pos_drop = dropout(drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(self.stage_depths)).tolist()
        kw = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                  attn_drop=attn_drop_rate, init_values=init_values, norm_layer=norm_layer)
        blocks = []
        for stage, depth in enumerate(self.stage_depths):
            block = CrossSelfBlock if stage > 0 and self.use_bottleneck else Block
            blocks += [block(embed_dim, drop_path=dpr[len(blocks) + i], **kw) for i in range(depth)]
        self.blocks = nn.ModuleList(blocks)

        if self.use_temporal_pyramid:
            k = self.temporal_kernel_size
            if temporal_downsample == "conv":
                ops = [nn.Conv1d(embed_dim, embed_dim, k, stride=k) for _ in range(later)]
            elif temporal_downsample in ("avg", "max"):
                ops = [TemporalPool(temporal_downsample, k) for _ in range(later)]
            else:
                raise ValueError(f"temporal_downsample must be conv, avg or max, not {temporal_downsample!r}")
            self.temporal_downsamples = nn.ModuleList(ops)
        if self.use_bottleneck:
            tokens = _per_stage(num_bottleneck_tokens, later, "num_bottleneck_tokens")
            self.spatial_downsamples = nn.ModuleList(
                [SpatialBottleneck(embed_dim, g, bottleneck_hidden_dim, norm_layer) for g in tokens])

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable=True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        """Layer ordinals for timm's layer-wise lr decay.

        The temporal downsampling and bottleneck modules of a stage sit at the depth of that
        stage's first block (the release gave them the full learning rate).
        """
        starts = [sl.start for sl in self.stage_slices()]
        stage_of = self.block_stage_ids()

        def ordinal(name):
            if name.startswith(("patch_embed.", "pos_embed")):
                return 0
            parts = name.split(".")
            if parts[0] == "blocks":
                block = int(parts[1])
                return starts[stage_of[block]] + 1 if coarse else block + 1
            if parts[0] in ("temporal_downsamples", "spatial_downsamples"):
                return starts[int(parts[1]) + 1] + 1
            return float("inf")  # norms and head: the top layer

        return ordinal

    def stage_slices(self):
        bounds, start = [], 0
        for depth in self.stage_depths:
            bounds.append(slice(start, start + depth))
            start += depth
        return bounds

    def block_stage_ids(self):
        """Stage index (0-based) of every block, in ``blocks`` order."""
        return [s for s, d in enumerate(self.stage_depths) for _ in range(d)]

    def _run(self, block, *args):
        return run_block(block, *args, checkpoint=self.grad_checkpointing)

    def embed(self, x):
        """Clip ``(B, C, T, H, W)`` → tokens with positions ``(B, N, C)``."""
        x = self.patch_embed(x)
        pos = self.pos_embed
        if pos.shape[1] != x.shape[1]:
            raise ValueError(f"input gives {x.shape[1]} tokens but the model was built for {pos.shape[1]} "
                             f"(grid {self.grid_size}); build it with the matching img_size/num_frames")
        return self.pos_drop(x + pos.to(x.dtype))

    def forward_stages(self, x):
        """Tokens ``(B, T, S, C)`` → the output of every stage, each ``(B, T_i, S, C)``.

        ``S`` may be any subset of spatial positions shared by all time steps (tube masking),
        which is what lets the same code run on the visible tokens in pre-training.
        """
        b, t, s, c = x.shape
        slices = self.stage_slices()
        tokens = x.reshape(b, t * s, c)
        for blk in self.blocks[slices[0]]:
            tokens = self._run(blk, tokens)
        x = tokens.reshape(b, t, s, c)
        outs = [x]
        for i, sl in enumerate(slices[1:]):
            if self.use_temporal_pyramid:
                x = temporal_downsample(self.temporal_downsamples[i], x)
            t_i = x.shape[1]
            tokens = x.reshape(b, t_i * s, c)
            stage_blocks = self.blocks[sl]
            if self.use_bottleneck:
                z = call_in_dtype(self.spatial_downsamples[i], x)
                for blk in stage_blocks[:-1]:
                    z = self._run(blk, z, tokens)
                tokens = self._run(stage_blocks[-1], tokens, z)
            else:
                for blk in stage_blocks:
                    tokens = self._run(blk, tokens)
            x = tokens.reshape(b, t_i, s, c)
            outs.append(x)
        return outs

    @staticmethod
    def fuse(outs):
        """Multi-scale fusion: upsample each stage in time (nearest) to stage 1 and sum."""
        b, t, s, c = outs[0].shape
        fused = outs[0]
        for o in outs[1:]:
            # Nearest upsampling as a broadcast over the time steps each one covers: no copy.
            fused = (fused.view(b, o.shape[1], -1, s, c) + o.unsqueeze(2)).view(b, t, s, c)
        return fused


class TPSBT(TPSBTTrunk):
    """TPSBT classifier/regressor: last stage (or all, fused) → mean → ``fc_norm`` → ``head``."""

    def __init__(self, num_classes=7, init_scale=0.0, use_mean_pooling=True, keep_temporal_dim=False,
                 head_activation_func=None, fuse_stages=False, all_frames=None, **kwargs):
        if all_frames is not None:  # the release's name for num_frames
            kwargs["num_frames"] = all_frames
        super().__init__(**kwargs)
        norm_layer = kwargs.get("norm_layer") or partial(LayerNorm, eps=1e-6)
        self.num_classes = num_classes
        self.keep_temporal_dim = keep_temporal_dim
        self.fuse_stages = fuse_stages
        self.norm = nn.Identity() if use_mean_pooling else norm_layer(self.embed_dim)
        self.fc_norm = norm_layer(self.embed_dim) if use_mean_pooling else None
        self.fc_dropout = dropout(kwargs.get("drop_rate", 0.0))
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(head_activation_func, str):
            if head_activation_func not in _ACTIVATIONS:
                raise ValueError(f"head_activation_func must be one of {sorted(_ACTIVATIONS)} or a callable")
            head_activation_func = _ACTIVATIONS[head_activation_func]
        self.head_activation_func = head_activation_func

        self.apply(init_weights)
        if isinstance(self.head, nn.Linear):
            self.head.weight.data.mul_(init_scale)
            self.head.bias.data.mul_(init_scale)

    def load_pretrained(self, checkpoint_path):
        """timm's hook for ``create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``:
        the file (or transformers folder) goes through ``models.checkpoint.pretrained_filter``."""
        from .checkpoint import load_for_timm
        load_for_timm(self, checkpoint_path)

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_tokens(self, x):
        """The token map the head pools: the last stage's (or all stages fused) ``(B, T_i, S, C)``."""
        x = self.embed(x)
        b, _, c = x.shape
        t, h, w = self.grid_size
        outs = self.forward_stages(x.reshape(b, t, h * w, c))
        return self.fuse(outs) if self.fuse_stages else outs[-1]

    def forward_features(self, x):
        """Pooled, normed features ``(B, C)``, or per time step ``(B, T_last, C)`` with keep_temporal_dim."""
        x = self.norm(self.forward_tokens(x))
        if self.fc_norm is None:
            # The release's non-mean-pooling path reads the first token (it had no CLS token).
            return x.flatten(1, 2)[:, 0]
        if self.keep_temporal_dim:
            return self.fc_norm(x.mean(2))
        return self.fc_norm(x.mean((1, 2)))

    def forward_head(self, features):
        x = self.head(self.fc_dropout(features))
        if self.head_activation_func is not None:
            x = self.head_activation_func(x)
        return x

    def forward(self, x, save_feature=False):
        features = self.forward_features(x)
        logits = self.forward_head(features)
        if self.keep_temporal_dim:
            # One output per input frame: repeat each time step's output over the frames it covers.
            factor = self.num_frames // logits.shape[1]
            logits = logits.repeat_interleave(factor, dim=1).flatten(1)
            features = features.repeat_interleave(factor, dim=1)
        return (logits, features) if save_feature else logits

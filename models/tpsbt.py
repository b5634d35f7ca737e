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
from timm.models._features import feature_take_indices

from .layers import Block, CrossSelfBlock, LayerNorm, PatchEmbed3d, SpatialBottleneck, call_in_dtype, dropout, \
    init_weights, run_block, sinusoid_table, temporal_downsample

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

    layer_decay_scheme = "release"  # see group_matcher; engine/optim.py sets it from --layer_decay_scheme

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
                pool = nn.AvgPool1d if temporal_downsample == "avg" else nn.MaxPool1d
                ops = [pool(k, k) for _ in range(later)]
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
        """Layer ordinals for timm's layer-wise lr decay: the embedding 0, block i at i + 1, the rest
        on top. ``layer_decay_scheme`` says where the temporal downsampling and bottleneck modules
        go: "release" on top (the full lr, as the release's layer ids), "stage" at the depth of their
        stage's first block."""
        starts = [sl.start for sl in self.stage_slices()]
        stage_of = self.block_stage_ids()
        stagewise = self.layer_decay_scheme == "stage"

        def ordinal(name):
            if name.startswith(("patch_embed.", "pos_embed")):
                return 0
            parts = name.split(".")
            if parts[0] == "blocks":
                block = int(parts[1])
                return starts[stage_of[block]] + 1 if coarse else block + 1
            if stagewise and parts[0] in ("temporal_downsamples", "spatial_downsamples"):
                return starts[int(parts[1]) + 1] + 1
            return float("inf")  # norms, head (and the stage modules by the release's ids): the top layer

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

    def forward_stages(self, x, num_stages=None):
        """Tokens ``(B, T, S, C)`` → the output of every stage (of the first ``num_stages``), each
        ``(B, T_i, S, C)``.

        ``S`` may be any subset of spatial positions shared by all time steps (tube masking),
        which is what lets the same code run on the visible tokens in pre-training.
        """
        b, t, s, c = x.shape
        slices = self.stage_slices()[:num_stages]
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

    @property
    def global_pool(self):
        """timm's name for the pooling: ``avg`` (mean over tokens, then ``fc_norm``) or ``token``
        (the release's non-mean-pooling path: the first token after ``norm``)."""
        return "avg" if self.fc_norm is not None else "token"

    @property
    def feature_info(self):
        """timm's feature metadata: one entry per stage (``forward_intermediates`` indices)."""
        last = [sl.stop - 1 for sl in self.stage_slices()]
        patch = self.patch_embed.proj.kernel_size[-1]
        return [dict(num_chs=self.embed_dim, reduction=patch, module=f"blocks.{i}", stage=s)
                for s, i in enumerate(last)]

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        """A new ``num_classes``-way head (none for 0). The pooling is built in (``fc_norm`` exists
        only with mean pooling): ``global_pool`` may only name the model's own."""
        if global_pool is not None and global_pool != self.global_pool:
            raise ValueError(f"this model pools with {self.global_pool!r}, fixed when it is built "
                             f"(use_mean_pooling); global_pool={global_pool!r} cannot be switched to")
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_tokens(self, x):
        """The token map the head pools: the last stage's (or all stages fused) ``(B, T_i, S, C)``."""
        x = self.embed(x)
        b, _, c = x.shape
        t, h, w = self.grid_size
        outs = self.forward_stages(x.reshape(b, t, h * w, c))
        return self.fuse(outs) if self.fuse_stages else outs[-1]

    def pool(self, tokens):
        """Token map ``(B, T_i, S, C)`` → pooled, normed features ``(B, C)``, or ``(B, T_i, C)``
        with keep_temporal_dim."""
        x = self.norm(tokens)
        if self.fc_norm is None:
            # The release's non-mean-pooling path reads the first token (it had no CLS token).
            return x.flatten(1, 2)[:, 0]
        if self.keep_temporal_dim:
            return self.fc_norm(x.mean(2))
        return self.fc_norm(x.mean((1, 2)))

    def forward_features(self, x):
        """Pooled, normed features ``(B, C)``, or per time step ``(B, T_last, C)`` with keep_temporal_dim
        (what :meth:`forward_head` takes)."""
        return self.pool(self.forward_tokens(x))

    def forward_head(self, features, pre_logits=False):
        """timm's head: ``features`` from :meth:`forward_features` → outputs; with ``pre_logits``
        the features the classifier reads (after its dropout)."""
        x = self.fc_dropout(features)
        if pre_logits:
            return x
        x = self.head(x)
        if self.head_activation_func is not None:
            x = self.head_activation_func(x)
        return x

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCTHW",
                              intermediates_only=False):
        """timm's feature extraction, per stage: the tokens each stage outputs.

        ``indices``: stages to return (an int: the last n; ``None``: all). ``norm``: apply the final
        ``norm`` (identity with mean pooling, as timm's ViT with ``fc_norm``). ``output_fmt``:
        ``NCTHW`` (``(B, C, T_i, H, W)``) or ``NLC`` (``(B, T_i * H * W, C)``). ``stop_early``: run only
        up to the last stage asked for. Returns the list, or ``(forward_features(x), list)``.
        """
        if output_fmt not in ("NCTHW", "NLC"):
            raise ValueError(f"output_fmt must be NCTHW or NLC, not {output_fmt!r}")
        take, last = feature_take_indices(len(self.stage_depths), indices)
        tokens = self.embed(x)
        b, _, c = tokens.shape
        t, h, w = self.grid_size
        stop = last + 1 if stop_early or intermediates_only else None
        outs = self.forward_stages(tokens.reshape(b, t, h * w, c), stop)
        intermediates = []
        for i in take:
            y = self.norm(outs[i]) if norm else outs[i]
            intermediates.append(y.permute(0, 3, 1, 2).reshape(b, c, y.shape[1], h, w) if output_fmt == "NCTHW"
                                 else y.flatten(1, 2))
        if intermediates_only:
            return intermediates
        return self.pool(self.fuse(outs) if self.fuse_stages else outs[-1]), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the stages after the last one ``indices`` takes (timm's features_only does this)."""
        take, last = feature_take_indices(len(self.stage_depths), indices)
        self.stage_depths = self.stage_depths[:last + 1]
        self.blocks = self.blocks[:sum(self.stage_depths)]
        if self.use_temporal_pyramid:
            self.temporal_downsamples = self.temporal_downsamples[:last]
        if self.use_bottleneck:
            self.spatial_downsamples = self.spatial_downsamples[:last]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = None if self.fc_norm is None else nn.Identity()
            self.reset_classifier(0)
        return take

    def forward(self, x, save_feature=False):
        features = self.forward_features(x)
        logits = self.forward_head(features)
        if self.keep_temporal_dim:
            # One output per input frame: repeat each time step's output over the frames it covers.
            factor = self.num_frames // logits.shape[1]
            logits = logits.repeat_interleave(factor, dim=1).flatten(1)
            features = features.repeat_interleave(factor, dim=1)
        return (logits, features) if save_feature else logits

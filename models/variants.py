"""The registered models' sizes (the paper's SVFAP-B/S and the VideoMAE ViT-B baseline): the one
home of these numbers, for the registry (models/factory.py) and the VideoMAE reader."""

PATCH_SIZE = 16  # every registered model's
_COMMON = dict(img_size=160, patch_size=PATCH_SIZE, tubelet_size=2, num_frames=16, mlp_ratio=4.0, qkv_bias=True,
               num_bottleneck_tokens=8, temporal_kernel_size=2)

SVFAP_BASE = dict(_COMMON, embed_dim=512, num_heads=8, stage_depths=(12, 6, 3))
SVFAP_SMALL = dict(_COMMON, embed_dim=384, num_heads=6, stage_depths=(8, 4, 2))
# Not in the paper: a small size for demos, tests and quick experiments on a CPU.
SVFAP_TINY = dict(_COMMON, embed_dim=192, num_heads=3, stage_depths=(4, 2, 2))
VIDEOMAE_BASE = dict(_COMMON, embed_dim=768, num_heads=12, stage_depths=(12,))
DECODER = dict(decoder_embed_dim=384, decoder_num_heads=6, decoder_depth=4)
TINY_DECODER = dict(decoder_embed_dim=192, decoder_num_heads=3, decoder_depth=2)
FINETUNE_CLASSES = 7  # the registered default (DFEW's 7 expressions)

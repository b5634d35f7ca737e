"""The paper's recipes (docs/recipes.md) in the entry points' option names: the one home of these
values. run_pretrain.py and run_finetune.py take their defaults from here, the scripts under
scripts/ spell every value out for researchers to edit, and a test checks that all three agree.
Per-dataset values (sampling rate, classes, metric) live in datasets/registry.py."""

# TOTAL_BATCH is the effective batch; the scripts split it over processes and accumulation.
PRETRAIN = {
    "total_batch": 256, "epochs": 100, "warmup_epochs": 5, "lr": 3e-4, "min_lr": 1e-5, "warmup_lr": 1e-6,
    "weight_decay": 0.05, "opt_betas": [0.9, 0.95], "opt_eps": 1e-8, "drop_path": 0.0,
    "num_frames": 16, "sampling_rate": 4, "input_size": 160, "mask_type": "tube", "mask_ratio": 0.9,
    "decoder_depth": 4, "normlize_target": True,
}
FINETUNE = {
    "total_batch": 96, "epochs": 100, "warmup_epochs": 5, "lr": 1e-3, "min_lr": 1e-6, "warmup_lr": 1e-6,
    "weight_decay": 0.05, "opt_betas": [0.9, 0.999], "opt_eps": 1e-8, "layer_decay": 0.75, "drop_path": 0.1,
    "init_scale": 0.001, "num_frames": 16, "input_size": 160, "num_sample": 1,
    "aa": "rand-m7-n4-mstd0.5-inc1", "reprob": 0.25, "mixup": 0.8, "cutmix": 1.0, "smoothing": 0.1,
    "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch", "test_num_segment": 2, "test_num_crop": 1,
}
# Linear probing (--tuning linear) changes these of FINETUNE: the frozen features are judged as
# they are, so no augmentation beyond the random resized crop and flip, no regularisation of a
# 4k-parameter head, and fewer epochs (only the head learns). Not tuned on the paper's datasets.
LINEAR_PROBE = {"epochs": 50, "weight_decay": 0.0, "layer_decay": 1.0, "drop_path": 0.0, "aa": "", "reprob": 0.0,
                "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.0}


def parser_defaults(recipe):
    """The recipe's values an argument parser takes as defaults: not the total batch (the scripts
    split it), nor the decoder depth (every model's own default; the paper's models have 4)."""
    return {k: v for k, v in recipe.items() if k not in ("total_batch", "decoder_depth")}

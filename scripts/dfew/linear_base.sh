#!/usr/bin/env bash
# DFEW, SVFAP-B: linear probing of the pre-trained encoder (--tuning linear: frozen encoder, linear
# head), test the last epoch's checkpoint (2 clips a video), report. 5 official folds, pooled.
# Splits first:  python -m preprocess.dfew --root $DATA_ROOT --out $SPLIT_DIR
# From the repository root:
#   [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#     bash scripts/dfew/linear_base.sh [more run_finetune.py options]
# Every value below can be edited here or set from the environment (LR=4e-3 bash ...); DRY_RUN=1
# prints the commands. The checkpoints hold the head only and refer to $PRETRAINED by path and
# sha256: keep that file where it is (or pass --backbone to a later --eval).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_SET=DFEW
MODEL=${MODEL:-svfap_base_patch16_160}
DATA_ROOT=${DATA_ROOT:-data/DFEW}
SPLIT_DIR=${SPLIT_DIR:-splits/dfew}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_base/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/dfew/linear_base}

# The linear-probing recipe (docs/tuning.md): no RandAugment, erasing, mixup, cutmix, smoothing,
# weight decay or layer decay; drop path has no effect on the frozen encoder.
TOTAL_BATCH=${TOTAL_BATCH:-96} EPOCHS=${EPOCHS:-50} WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
LR=${LR:-1e-3} MIN_LR=${MIN_LR:-1e-6} WARMUP_LR=${WARMUP_LR:-1e-6}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0} OPT_BETAS=${OPT_BETAS:-"0.9 0.999"} OPT_EPS=${OPT_EPS:-1e-8}
LAYER_DECAY=${LAYER_DECAY:-1.0} DROP_PATH=${DROP_PATH:-0.0} INIT_SCALE=${INIT_SCALE:-0.001}
NUM_FRAMES=${NUM_FRAMES:-16} SAMPLING_RATE=${SAMPLING_RATE:-4} INPUT_SIZE=${INPUT_SIZE:-160} NUM_SAMPLE=${NUM_SAMPLE:-1}
AA=${AA-} REPROB=${REPROB:-0.0}
MIXUP=${MIXUP:-0.0} CUTMIX=${CUTMIX:-0.0} SMOOTHING=${SMOOTHING:-0.0}
MIXUP_PROB=${MIXUP_PROB:-1.0} MIXUP_SWITCH_PROB=${MIXUP_SWITCH_PROB:-0.5} MIXUP_MODE=${MIXUP_MODE:-batch}
TEST_NUM_SEGMENT=${TEST_NUM_SEGMENT:-2} TEST_NUM_CROP=${TEST_NUM_CROP:-1}

svfap_finetune --tuning linear "$@"

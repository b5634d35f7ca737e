#!/usr/bin/env bash
# RAVDESS, SVFAP-B: fine-tune, test the last epoch's checkpoint (2 clips a video), report. 6 actor folds, pooled.
# Splits first:  python -m preprocess.ravdess --root $DATA_ROOT --out $SPLIT_DIR --crop
# From the repository root:
#   [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#     bash scripts/ravdess/finetune_base.sh [more run_finetune.py options]
# Every value below can be edited here or set from the environment (EPOCHS=50 bash ...); DRY_RUN=1
# prints the commands. Classes, splits and the validation metric come from datasets/registry.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_SET=RAVDESS
MODEL=${MODEL:-svfap_base_patch16_160}
DATA_ROOT=${DATA_ROOT:-data/RAVDESS}
SPLIT_DIR=${SPLIT_DIR:-splits/ravdess}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_base/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/ravdess/finetune_base}

# The fine-tuning recipe (docs/recipes.md); TOTAL_BATCH is split over the processes.
TOTAL_BATCH=${TOTAL_BATCH:-96} EPOCHS=${EPOCHS:-100} WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
LR=${LR:-1e-3} MIN_LR=${MIN_LR:-1e-6} WARMUP_LR=${WARMUP_LR:-1e-6}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.05} OPT_BETAS=${OPT_BETAS:-"0.9 0.999"} OPT_EPS=${OPT_EPS:-1e-8}
LAYER_DECAY=${LAYER_DECAY:-0.75} DROP_PATH=${DROP_PATH:-0.1} INIT_SCALE=${INIT_SCALE:-0.001}
NUM_FRAMES=${NUM_FRAMES:-16} SAMPLING_RATE=${SAMPLING_RATE:-4} INPUT_SIZE=${INPUT_SIZE:-160} NUM_SAMPLE=${NUM_SAMPLE:-1}
AA=${AA:-rand-m7-n4-mstd0.5-inc1} REPROB=${REPROB:-0.25}
MIXUP=${MIXUP:-0.8} CUTMIX=${CUTMIX:-1.0} SMOOTHING=${SMOOTHING:-0.1}
MIXUP_PROB=${MIXUP_PROB:-1.0} MIXUP_SWITCH_PROB=${MIXUP_SWITCH_PROB:-0.5} MIXUP_MODE=${MIXUP_MODE:-batch}
TEST_NUM_SEGMENT=${TEST_NUM_SEGMENT:-2} TEST_NUM_CROP=${TEST_NUM_CROP:-1}

svfap_finetune "$@"

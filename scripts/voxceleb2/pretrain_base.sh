#!/usr/bin/env bash
# VoxCeleb2, SVFAP-B: masked video pre-training (tube masking 0.9) on the dev set's face tracks.
# Clip list first:  python -m preprocess.voxceleb2 --root $DATA_ROOT --out $SPLIT_DIR --check
# From the repository root:
#   [DATA_ROOT=..] [SPLIT_DIR=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] [MAX_BATCH_PER_GPU=..] \
#     bash scripts/voxceleb2/pretrain_base.sh [more run_pretrain.py options]
# Every value below can be edited here or set from the environment; DRY_RUN=1 prints the command.
# A stopped run (SIGTERM, SIGUSR1, Ctrl-C) exits 75; rerun the same command to continue.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_SET=VOXCELEB2
MODEL=${MODEL:-pretrain_svfap_base_patch16_160}
DATA_ROOT=${DATA_ROOT:-data/VoxCeleb2}
SPLIT_DIR=${SPLIT_DIR:-splits/voxceleb2}
OUTPUT_DIR=${OUTPUT_DIR:-output/voxceleb2/pretrain_base}

# The pre-training recipe (docs/recipes.md); TOTAL_BATCH is split over the processes.
TOTAL_BATCH=${TOTAL_BATCH:-256} EPOCHS=${EPOCHS:-100} WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
LR=${LR:-3e-4} MIN_LR=${MIN_LR:-1e-5} WARMUP_LR=${WARMUP_LR:-1e-6}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.05} OPT_BETAS=${OPT_BETAS:-"0.9 0.95"} OPT_EPS=${OPT_EPS:-1e-8} DROP_PATH=${DROP_PATH:-0.0}
NUM_FRAMES=${NUM_FRAMES:-16} SAMPLING_RATE=${SAMPLING_RATE:-4} INPUT_SIZE=${INPUT_SIZE:-160}
MASK_TYPE=${MASK_TYPE:-tube} MASK_RATIO=${MASK_RATIO:-0.9} DECODER_DEPTH=${DECODER_DEPTH:-4} NORMLIZE_TARGET=${NORMLIZE_TARGET:-True}
FACE_CROP=${FACE_CROP:-True}  # the upper-centre 160x160 of the 224x224 face tracks

svfap_pretrain "$@"

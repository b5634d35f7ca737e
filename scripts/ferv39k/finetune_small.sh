#!/usr/bin/env bash
# FERV39K, SVFAP-S (small): fine-tune, test, pool. official train/test split; the release samples FERV39k with stride 1.
# Prepare the splits once:  python -m preprocess.ferv39k --root $DATA_ROOT --out $SPLIT_DIR
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/ferv39k/finetune_small.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/FERV39k}
SPLIT_DIR=${SPLIT_DIR:-splits/ferv39k}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_small/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/ferv39k/finetune_small}

MODEL=svfap_small_patch16_160
DATA_SET=FERV39K
NB_CLASSES=7
FOLDS=${FOLDS:-.}
VAL_METRIC=${VAL_METRIC:-uar}
TASK=classification
POOL=joint
: "${SAMPLING_RATE:=1}"   # the release uses stride 1 for FERV39k (short clips)

svfap_finetune "$@"

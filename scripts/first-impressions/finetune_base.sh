#!/usr/bin/env bash
# FIRST-IMPRESSIONS, SVFAP-B (base): fine-tune, test, pool. Big Five regression on the official train/val/test split; CCC and 1-MAE per trait.
# Prepare the splits once:  python -m preprocess.first_impressions --root $DATA_ROOT --out $SPLIT_DIR
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/first-impressions/finetune_base.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/FirstImpressions}
SPLIT_DIR=${SPLIT_DIR:-splits/first-impressions}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_base/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/first-impressions/finetune_base}

MODEL=svfap_base_patch16_160
DATA_SET=FIRST-IMPRESSIONS
NB_CLASSES=5
FOLDS=${FOLDS:-.}
VAL_METRIC=${VAL_METRIC:-ccc}
TASK=regression
POOL=joint

svfap_finetune "$@"

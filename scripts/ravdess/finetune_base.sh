#!/usr/bin/env bash
# RAVDESS, SVFAP-B (base): fine-tune, test, pool. 6 actor-independent folds on face crops; pooled UAR/WAR.
# Prepare the splits once:  python -m preprocess.ravdess --root $DATA_ROOT --out $SPLIT_DIR --crop
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/ravdess/finetune_base.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/RAVDESS}
SPLIT_DIR=${SPLIT_DIR:-splits/ravdess}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_base/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/ravdess/finetune_base}

MODEL=svfap_base_patch16_160
DATA_SET=RAVDESS
NB_CLASSES=8
FOLDS=${FOLDS:-split01 split02 split03 split04 split05 split06}
VAL_METRIC=${VAL_METRIC:-uar}
TASK=classification
POOL=joint

svfap_finetune "$@"

#!/usr/bin/env bash
# CREMA-D, SVFAP-B (base): fine-tune, test, pool. 5 actor-independent folds on face crops; pooled UAR/WAR.
# Prepare the splits once:  python -m preprocess.crema_d --root $DATA_ROOT --out $SPLIT_DIR --crop
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/crema-d/finetune_base.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/CREMA-D}
SPLIT_DIR=${SPLIT_DIR:-splits/crema-d}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_base/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/crema-d/finetune_base}

MODEL=svfap_base_patch16_160
DATA_SET=CREMA-D
NB_CLASSES=6
FOLDS=${FOLDS:-split01 split02 split03 split04 split05}
VAL_METRIC=${VAL_METRIC:-uar}
TASK=classification
POOL=joint

svfap_finetune "$@"

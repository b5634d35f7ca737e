#!/usr/bin/env bash
# AVCAFFE, SVFAP-S (small): fine-tune, test, pool. arousal and valence (5 classes each) trained as two models on the official 86/20-subject split; weighted F1 per target.
# Prepare the splits once:  python -m preprocess.avcaffe --root $DATA_ROOT --out $SPLIT_DIR
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/avcaffe/finetune_small.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/AVCAffe}
SPLIT_DIR=${SPLIT_DIR:-splits/avcaffe}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_small/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/avcaffe/finetune_small}

MODEL=svfap_small_patch16_160
DATA_SET=AVCAFFE
NB_CLASSES=5
FOLDS=${FOLDS:-arousal valence}
VAL_METRIC=${VAL_METRIC:-weighted_f1}
TASK=classification
POOL=each

svfap_finetune "$@"

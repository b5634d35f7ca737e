#!/usr/bin/env bash
# WEREWOLF-XL, SVFAP-S (small): fine-tune, test, pool. arousal/valence/dominance regression, 5 session-independent folds; pooled PCC/CCC.
# Prepare the splits once:  python -m preprocess.werewolf_xl --root $DATA_ROOT --out $SPLIT_DIR
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [PRETRAINED=..] [OUTPUT_DIR=..] [NPROC_PER_NODE=..] \
#          bash scripts/werewolf-xl/finetune_small.sh [extra run_finetune.py arguments]
# Recipe values (LR, EPOCHS, TOTAL_BATCH, ...) and launcher settings: see scripts/common.sh;
# each can be overridden from the environment. DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/Werewolf-XL}
SPLIT_DIR=${SPLIT_DIR:-splits/werewolf-xl}
PRETRAINED=${PRETRAINED:-output/voxceleb2/pretrain_small/checkpoint-99.pth}
OUTPUT_DIR=${OUTPUT_DIR:-output/werewolf-xl/finetune_small}

MODEL=svfap_small_patch16_160
DATA_SET=WEREWOLF-XL
NB_CLASSES=3
FOLDS=${FOLDS:-split01 split02 split03 split04 split05}
VAL_METRIC=${VAL_METRIC:-ccc}
TASK=regression
POOL=joint

svfap_finetune "$@"

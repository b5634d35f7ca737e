#!/usr/bin/env bash
# VoxCeleb2 dev, SVFAP-B (base): masked video pre-training (tube mask 0.9, 100 epochs).
# Prepare the clip list once:  python -m preprocess.voxceleb2 --root $DATA_ROOT --out $SPLIT_DIR --check
# Usage: [DATA_ROOT=..] [SPLIT_DIR=..] [OUTPUT_DIR=..] [NNODES=.. NODE_RANK=.. MASTER_ADDR=..] \
#          [MAX_BATCH_PER_GPU=..] bash scripts/voxceleb2/pretrain_base.sh [extra run_pretrain.py arguments]
# Recipe values and launcher settings: see scripts/common.sh; DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATA_ROOT=${DATA_ROOT:-data/VoxCeleb2}
SPLIT_DIR=${SPLIT_DIR:-splits/voxceleb2}
OUTPUT_DIR=${OUTPUT_DIR:-output/voxceleb2/pretrain_base}
MODEL=pretrain_svfap_base_patch16_160

svfap_pretrain "$@"

#!/usr/bin/env bash
# The built-in demo, end to end on 2 CPU cores in minutes: generate the synthetic facial-expression
# set, pre-train a tiny TPSBT on it by masked video autoencoding, fine-tune from that checkpoint,
# then evaluate the last epoch's checkpoint with multi-view testing and print the metrics.
#
# Usage: bash scripts/demo/run_demo.sh [extra run_finetune.py arguments]
# Environment: DATA (demo_data), OUT (demo_output), PT_EPOCHS, FT_EPOCHS, NUM_WORKERS, PYTHON.
# The lrs are large because the engine scales every lr by batch / 256 and the demo batches are
# small. Fine-tuning drops RandAugment, random erasing, mixup and layer decay and crops gently:
# with a few hundred clips and a few minutes, the paper's heavy recipe leaves a tiny model at chance.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-demo_data}
OUT=${OUT:-demo_output}
PT_EPOCHS=${PT_EPOCHS:-4}
FT_EPOCHS=${FT_EPOCHS:-40}
NUM_WORKERS=${NUM_WORKERS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
COMMON=(--input_size 64 --num_frames 8 --sampling_rate 6 --num_workers "$NUM_WORKERS" --print_freq 10 --device cpu)

start=$(date +%s)
if [ ! -f "$DATA/train.csv" ]; then
  echo "== generating the demo dataset in $DATA"
  "$PY" -m datasets.demo --out "$DATA"
fi

echo "== pre-training pretrain_svfap_tiny_patch16_160 for $PT_EPOCHS epochs (tube masking 0.9)"
"$PY" run_pretrain.py --model pretrain_svfap_tiny_patch16_160 --data_path "$DATA/pretrain.csv" --data_root "$DATA" \
  --mask_ratio 0.9 --epochs "$PT_EPOCHS" --warmup_epochs 1 --lr 1.6e-2 --min_lr 1e-4 --save_ckpt_freq "$PT_EPOCHS" --batch_size 8 \
  --output_dir "$OUT/pretrain" "${COMMON[@]}"
PRETRAINED=$OUT/pretrain/checkpoint-$((PT_EPOCHS - 1)).pth

echo "== fine-tuning svfap_tiny_patch16_160 from $PRETRAINED for $FT_EPOCHS epochs"
"$PY" run_finetune.py --model svfap_tiny_patch16_160 --data_set custom --nb_classes 6 --data_path "$DATA" \
  --data_root "$DATA" --finetune "$PRETRAINED" --epochs "$FT_EPOCHS" --warmup_epochs 1 --lr 1.6e-2 --min_lr 1e-5 \
  --batch_size 16 --layer_decay 1.0 --drop_path 0.0 --mixup 0 --cutmix 0 --aa "" --reprob 0 \
  --train_crop_scale 0.7 1.0 --save_ckpt_freq "$FT_EPOCHS" \
  --output_dir "$OUT/finetune" "${COMMON[@]}" "$@"

echo "== evaluating the last epoch's checkpoint (2 temporal views per video)"
"$PY" run_finetune.py --model svfap_tiny_patch16_160 --data_set custom --nb_classes 6 --data_path "$DATA" \
  --data_root "$DATA" --eval True --finetune "$OUT/finetune/checkpoint-$((FT_EPOCHS - 1)).pth" --test_num_segment 2 \
  --batch_size 16 --output_dir "$OUT/eval" "${COMMON[@]}"

echo "== done in $(( $(date +%s) - start )) s; reports in $OUT/eval (pred.csv, metrics.json, confusion_matrix.png)"

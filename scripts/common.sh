# Shared by every script under scripts/: launcher settings, batch arithmetic, the SVFAP recipes
# (docs/recipes.md) and the fine-tune -> test -> pool loop. Source it; do not run it.
#
# Launcher, from the environment (single-node defaults):
#   NNODES=1  NPROC_PER_NODE=<visible GPUs, else 1>  NODE_RANK=0  MASTER_ADDR=127.0.0.1  MASTER_PORT=29500
# Batch: TOTAL_BATCH is the recipe's effective batch. Each process gets
#   BATCH_SIZE = TOTAL_BATCH / (NNODES * NPROC_PER_NODE * UPDATE_FREQ)
# UPDATE_FREQ (gradient accumulation) defaults to 1, or to the smallest value that keeps
# BATCH_SIZE <= MAX_BATCH_PER_GPU when that is set. A split that is not exact is an error, so the
# effective batch is the recipe's on any number of GPUs.
# DRY_RUN=1 prints every command instead of running it.

SVFAP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$SVFAP_REPO${PYTHONPATH:+:$PYTHONPATH}"

# torchrun forwards these to the training processes, which then save a resumable checkpoint and
# exit with status 75 (SIGUSR1 is what `sbatch --signal=USR1@300` sends before the time limit).
export TORCHELASTIC_SIGNALS_TO_HANDLE=${TORCHELASTIC_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}

PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
DRY_RUN=${DRY_RUN:-0}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

svfap_visible_gpus() {
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    local ids
    IFS=',' read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
    echo "${#ids[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | grep -c '^GPU'
  else
    echo 1
  fi
}
NPROC_PER_NODE=${NPROC_PER_NODE:-$(svfap_visible_gpus)}

svfap_die() { echo "error: $*" >&2; exit 1; }

# Sets BATCH_SIZE and UPDATE_FREQ from the total batch $1 (see the header).
svfap_batch() {
  local total=$1 world=$((NNODES * NPROC_PER_NODE)) uf
  [ "$world" -ge 1 ] || svfap_die "NNODES * NPROC_PER_NODE must be >= 1"
  if [ -n "${UPDATE_FREQ:-}" ]; then
    uf=$UPDATE_FREQ
  elif [ -n "${MAX_BATCH_PER_GPU:-}" ]; then
    uf=1
    while [ $((total % (world * uf))) -ne 0 ] || [ $((total / (world * uf))) -gt "$MAX_BATCH_PER_GPU" ]; do
      uf=$((uf + 1))
      [ $((world * uf)) -le "$total" ] || svfap_die "no UPDATE_FREQ splits TOTAL_BATCH=$total over $world processes with at most MAX_BATCH_PER_GPU=$MAX_BATCH_PER_GPU each"
    done
  else
    uf=1
  fi
  [ $((total % (world * uf))) -eq 0 ] || svfap_die "TOTAL_BATCH=$total does not split evenly over NNODES*NPROC_PER_NODE=$world processes x UPDATE_FREQ=$uf; choose a process count (or UPDATE_FREQ) that divides it"
  BATCH_SIZE=$((total / (world * uf)))
  UPDATE_FREQ=$uf
}

svfap_run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

svfap_torchrun() {
  svfap_run "$TORCHRUN" --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" "$SVFAP_REPO/$1" "${@:2}"
}

# Pre-training recipe (paper + release): the values run_pretrain.py receives unless overridden.
svfap_pretrain_defaults() {
  : "${TOTAL_BATCH:=256}" "${EPOCHS:=100}" "${WARMUP_EPOCHS:=5}"
  : "${LR:=3e-4}"          # base lr; the engine scales it by total batch / 256, as the release did
  : "${MIN_LR:=1e-5}" "${WARMUP_LR:=1e-6}" "${WEIGHT_DECAY:=0.05}" "${OPT_BETAS:=0.9 0.95}" "${OPT_EPS:=1e-8}"
  : "${NUM_FRAMES:=16}" "${SAMPLING_RATE:=4}" "${INPUT_SIZE:=160}"
  : "${MASK_TYPE:=tube}" "${MASK_RATIO:=0.9}" "${DECODER_DEPTH:=4}" "${NORMLIZE_TARGET:=True}"
  : "${FACE_CROP:=True}"   # upper-central 160x160 of the 224x224 VoxCeleb2 face tracks
  # AMP: auto = bf16 on GPUs that support it (the release used fp16: AMP=fp16), none on CPU
  : "${DROP_PATH:=0.0}" "${AMP:=auto}" "${SAVE_CKPT_FREQ:=10}" "${NUM_WORKERS:=8}" "${SEED:=0}"
}

# Fine-tuning recipe. TOTAL_BATCH 96 is the paper's; the release scripts used 64 (TOTAL_BATCH=64).
svfap_finetune_defaults() {
  : "${TOTAL_BATCH:=96}" "${EPOCHS:=100}" "${WARMUP_EPOCHS:=5}"
  : "${LR:=1e-3}"          # base lr, scaled by total batch / 256 in the engine
  : "${MIN_LR:=1e-6}" "${WARMUP_LR:=1e-6}" "${WEIGHT_DECAY:=0.05}" "${OPT_BETAS:=0.9 0.999}" "${OPT_EPS:=1e-8}"
  : "${LAYER_DECAY:=0.75}" "${DROP_PATH:=0.1}" "${INIT_SCALE:=0.001}"
  : "${NUM_FRAMES:=16}" "${SAMPLING_RATE:=4}" "${INPUT_SIZE:=160}" "${NUM_SAMPLE:=1}"
  : "${AA:=rand-m7-n4-mstd0.5-inc1}" "${REPROB:=0.25}"
  if [ "${TASK:-classification}" = regression ]; then
    # Mixup/cutmix and label smoothing mix one-hot class targets; they do not apply to regression.
    : "${MIXUP:=0.0}" "${CUTMIX:=0.0}" "${SMOOTHING:=0.0}"
  else
    : "${MIXUP:=0.8}" "${CUTMIX:=1.0}" "${SMOOTHING:=0.1}"
  fi
  : "${MIXUP_PROB:=1.0}" "${MIXUP_SWITCH_PROB:=0.5}" "${MIXUP_MODE:=batch}"
  : "${TEST_NUM_SEGMENT:=2}" "${TEST_NUM_CROP:=1}"   # 2 temporal clips x 1 spatial crop
  : "${MODEL_KEY:=model|module}" "${EVAL_CKPT:=checkpoint-best.pth}"
  : "${AMP:=auto}" "${SAVE_CKPT_FREQ:=20}" "${NUM_WORKERS:=8}" "${SEED:=0}"
}

svfap_require() {
  local v
  for v in "$@"; do [ -n "${!v:-}" ] || svfap_die "$v is not set"; done
}

# VoxCeleb2 pre-training. Needs DATA_ROOT, SPLIT_DIR, OUTPUT_DIR, MODEL; "$@" goes to run_pretrain.py.
svfap_pretrain() {
  svfap_require DATA_ROOT SPLIT_DIR OUTPUT_DIR MODEL
  svfap_pretrain_defaults
  svfap_batch "$TOTAL_BATCH"
  # shellcheck disable=SC2086  # OPT_BETAS is two numbers
  svfap_torchrun run_pretrain.py \
    --model "$MODEL" --data_set VOXCELEB2 --data_path "$SPLIT_DIR" --data_root "$DATA_ROOT" \
    --mask_type "$MASK_TYPE" --mask_ratio "$MASK_RATIO" --decoder_depth "$DECODER_DEPTH" \
    --normlize_target "$NORMLIZE_TARGET" --face_crop "$FACE_CROP" \
    --input_size "$INPUT_SIZE" --num_frames "$NUM_FRAMES" --sampling_rate "$SAMPLING_RATE" \
    --batch_size "$BATCH_SIZE" --update_freq "$UPDATE_FREQ" --epochs "$EPOCHS" \
    --opt adamw --opt_betas $OPT_BETAS --opt_eps "$OPT_EPS" --weight_decay "$WEIGHT_DECAY" \
    --lr "$LR" --min_lr "$MIN_LR" --warmup_lr "$WARMUP_LR" --warmup_epochs "$WARMUP_EPOCHS" \
    --drop_path "$DROP_PATH" --amp "$AMP" --save_ckpt_freq "$SAVE_CKPT_FREQ" \
    --num_workers "$NUM_WORKERS" --seed "$SEED" --auto_resume True \
    --output_dir "$OUTPUT_DIR" --log_dir "$OUTPUT_DIR" "$@"
}

# Fine-tune on every fold in FOLDS (sub-folders of SPLIT_DIR; "." for a single split), test each
# fold's EVAL_CKPT with multi-view testing, then pool. POOL=joint pools all folds into one score
# (cross-validation); POOL=each reports every entry of FOLDS on its own (AVCAffe's two targets).
# Needs DATA_ROOT SPLIT_DIR PRETRAINED OUTPUT_DIR DATA_SET NB_CLASSES MODEL FOLDS VAL_METRIC.
# SKIP_TRAIN=1 only tests existing checkpoints. "$@" goes to every run_finetune.py call.
svfap_finetune() {
  svfap_require DATA_ROOT SPLIT_DIR PRETRAINED OUTPUT_DIR DATA_SET NB_CLASSES MODEL FOLDS VAL_METRIC
  svfap_finetune_defaults
  svfap_batch "$TOTAL_BATCH"
  local fold pred_dirs=()
  for fold in $FOLDS; do
    local split=$SPLIT_DIR/$fold out=$OUTPUT_DIR/$fold
    if [ "$fold" = . ]; then split=$SPLIT_DIR; out=$OUTPUT_DIR; fi
    local data=(--model "$MODEL" --data_set "$DATA_SET" --nb_classes "$NB_CLASSES"
      --data_path "$split" --data_root "$DATA_ROOT"
      --input_size "$INPUT_SIZE" --num_frames "$NUM_FRAMES" --sampling_rate "$SAMPLING_RATE"
      --batch_size "$BATCH_SIZE" --test_num_segment "$TEST_NUM_SEGMENT" --test_num_crop "$TEST_NUM_CROP"
      --dist_eval True --amp "$AMP" --num_workers "$NUM_WORKERS" --seed "$SEED")
    if [ "${SKIP_TRAIN:-0}" != 1 ]; then
      # shellcheck disable=SC2086
      svfap_torchrun run_finetune.py "${data[@]}" \
        --finetune "$PRETRAINED" --model_key "$MODEL_KEY" --init_scale "$INIT_SCALE" \
        --update_freq "$UPDATE_FREQ" --epochs "$EPOCHS" \
        --opt adamw --opt_betas $OPT_BETAS --opt_eps "$OPT_EPS" --weight_decay "$WEIGHT_DECAY" \
        --lr "$LR" --min_lr "$MIN_LR" --warmup_lr "$WARMUP_LR" --warmup_epochs "$WARMUP_EPOCHS" \
        --layer_decay "$LAYER_DECAY" --drop_path "$DROP_PATH" --num_sample "$NUM_SAMPLE" \
        --aa "$AA" --reprob "$REPROB" --smoothing "$SMOOTHING" \
        --mixup "$MIXUP" --cutmix "$CUTMIX" --mixup_prob "$MIXUP_PROB" \
        --mixup_switch_prob "$MIXUP_SWITCH_PROB" --mixup_mode "$MIXUP_MODE" \
        --val_metric "$VAL_METRIC" --save_ckpt_freq "$SAVE_CKPT_FREQ" --auto_resume True \
        --output_dir "$out" --log_dir "$out" "$@"
    fi
    if [ "$DRY_RUN" != 1 ] && [ ! -f "$out/$EVAL_CKPT" ]; then
      svfap_die "$out/$EVAL_CKPT not found (set EVAL_CKPT to the checkpoint to test)"
    fi
    svfap_torchrun run_finetune.py "${data[@]}" --eval True --finetune "$out/$EVAL_CKPT" \
      --model_key "$MODEL_KEY" --output_dir "$out/eval" --log_dir "$out/eval" "$@"
    pred_dirs+=("$out/eval")
    if [ "${POOL:-joint}" = each ]; then
      svfap_run "$PYTHON" -m engine.pool_folds --data_set "$DATA_SET" --pred_dirs "$out/eval"
    fi
  done
  if [ "${POOL:-joint}" = joint ]; then
    svfap_run "$PYTHON" -m engine.pool_folds --data_set "$DATA_SET" --pred_dirs "${pred_dirs[@]}"
  fi
}

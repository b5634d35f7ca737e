# Shared by every script under scripts/: launcher settings, batch arithmetic and the
# fine-tune -> test -> pool loop. Source it; do not run it. Run the scripts from the repository root.
#
# Launcher, from the environment (single-node defaults):
#   NNODES=1  NPROC_PER_NODE=<visible GPUs, else 1>  NODE_RANK=0  MASTER_ADDR=127.0.0.1  MASTER_PORT=29500
# PYTHON is the interpreter (default: the repository's .venv); processes start through
# "$PYTHON -m engine.launch" (torchrun, with the stop signals below), so no environment needs activating.
# Stopping: SIGUSR1, SIGTERM, SIGINT or SIGHUP to the launcher (or SIGUSR1, SIGTERM, SIGHUP to this
# script, which passes them on) make every training process save a resumable checkpoint at its next
# step; the launcher and the script then exit with status 75: rerun the same command to continue.
# Batch: TOTAL_BATCH (each script's recipe) is the effective batch. Each process gets
#   BATCH_SIZE = TOTAL_BATCH / (NNODES * NPROC_PER_NODE * UPDATE_FREQ)
# UPDATE_FREQ (gradient accumulation) defaults to 1, or to the smallest value that keeps
# BATCH_SIZE <= MAX_BATCH_PER_GPU when that is set. A split that is not exact is an error, so the
# effective batch is the recipe's on any number of GPUs.
# DEVICE=cuda (default): the runs ask for the GPU and fail with a clear error where CUDA is not usable
# (a login node, a driver older than torch's CUDA: docs/cluster.md); DEVICE=cpu runs on the CPU on purpose.
# DRY_RUN=1 prints every command instead of running it.
# COMPILE (auto, True or False; default auto: compiled on CUDA) is the training runs' --compile; the
# compiled graphs are cached under each run's output folder, so a resumed or requeued run reuses them.

SVFAP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

svfap_die() { echo "error: $*" >&2; exit 1; }

[ "$(pwd -P)" = "$(cd "$SVFAP_REPO" && pwd -P)" ] ||
  svfap_die "run the scripts from the repository root: cd $SVFAP_REPO"

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY_RUN=${DRY_RUN:-0}
DEVICE=${DEVICE:-cuda}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

if [ "$NNODES" -gt 1 ]; then
  case "$MASTER_ADDR" in
    127.*|localhost|::1) echo "warning: NNODES=$NNODES with MASTER_ADDR=$MASTER_ADDR: the other nodes cannot reach" \
                              "a loopback address; set MASTER_ADDR to node 0's address" >&2 ;;
  esac
fi

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

# Runs "$@" and returns its status. A stop signal sent to this script (sbatch --signal=B:USR1@300,
# scancel --batch, a kill) is passed on to the command; bash would otherwise act on it only after the
# command ended, or die and leave it running. SIGINT is left alone: Ctrl-C reaches the command itself.
svfap_run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
    return
  fi
  local pid status sig
  "$@" &
  pid=$!
  for sig in USR1 TERM HUP; do
    # shellcheck disable=SC2064  # the pid is fixed now
    trap "kill -s $sig $pid 2>/dev/null" "$sig"
  done
  while :; do
    status=0
    wait "$pid" || status=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: the wait was cut short by a trapped signal
  done
  trap - USR1 TERM HUP
  return "$status"
}

svfap_torchrun() {
  svfap_run "$PYTHON" -m engine.launch --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" \
    --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" "$@"
}

svfap_require() {
  local v
  for v in "$@"; do [ -n "${!v:-}" ] || svfap_die "$v is not set"; done
}

# Pre-training. Needs the script's paths and recipe values; "$@" goes to run_pretrain.py.
svfap_pretrain() {
  svfap_require DATA_SET DATA_ROOT SPLIT_DIR OUTPUT_DIR MODEL TOTAL_BATCH EPOCHS WARMUP_EPOCHS LR MIN_LR WARMUP_LR \
    WEIGHT_DECAY OPT_BETAS OPT_EPS DROP_PATH NUM_FRAMES SAMPLING_RATE INPUT_SIZE MASK_TYPE MASK_RATIO \
    DECODER_DEPTH NORMLIZE_TARGET FACE_CROP
  svfap_batch "$TOTAL_BATCH"
  # shellcheck disable=SC2086  # OPT_BETAS is two numbers
  svfap_torchrun run_pretrain.py \
    --model "$MODEL" --data_set "$DATA_SET" --data_path "$SPLIT_DIR" --data_root "$DATA_ROOT" \
    --batch_size "$BATCH_SIZE" --update_freq "$UPDATE_FREQ" --epochs "$EPOCHS" --warmup_epochs "$WARMUP_EPOCHS" \
    --lr "$LR" --min_lr "$MIN_LR" --warmup_lr "$WARMUP_LR" --weight_decay "$WEIGHT_DECAY" \
    --opt_betas $OPT_BETAS --opt_eps "$OPT_EPS" --drop_path "$DROP_PATH" \
    --num_frames "$NUM_FRAMES" --sampling_rate "$SAMPLING_RATE" --input_size "$INPUT_SIZE" \
    --mask_type "$MASK_TYPE" --mask_ratio "$MASK_RATIO" --decoder_depth "$DECODER_DEPTH" \
    --normlize_target "$NORMLIZE_TARGET" --face_crop "$FACE_CROP" --device "$DEVICE" --compile "${COMPILE:-auto}" \
    --output_dir "$OUTPUT_DIR" "$@"
}

# Fine-tune on every split the registry lists for DATA_SET (sub-folders of SPLIT_DIR), test each
# one's EVAL_CKPT with multi-view testing, then pool: all splits into one score, written to
# $OUTPUT_DIR/pooled with the mean +- std of the splits' scores, or each on its own (AVCAffe's two
# targets). EVAL_CKPT defaults to the last epoch's checkpoint, as the release tested; with a
# val.csv in a split, EVAL_CKPT=checkpoint-best.pth tests the best epoch by validation instead
# (there is no checkpoint-best.pth without one: selecting on the test split is not done).
# SKIP_TRAIN=1 only tests existing checkpoints; SPLITS="split01" runs a subset. "$@" goes to every
# run_finetune.py call.
svfap_finetune() {
  svfap_require DATA_SET DATA_ROOT SPLIT_DIR PRETRAINED OUTPUT_DIR MODEL TOTAL_BATCH EPOCHS WARMUP_EPOCHS LR \
    MIN_LR WARMUP_LR WEIGHT_DECAY OPT_BETAS OPT_EPS LAYER_DECAY DROP_PATH INIT_SCALE NUM_FRAMES SAMPLING_RATE \
    INPUT_SIZE NUM_SAMPLE REPROB MIXUP CUTMIX SMOOTHING MIXUP_PROB MIXUP_SWITCH_PROB MIXUP_MODE \
    TEST_NUM_SEGMENT TEST_NUM_CROP
  : "${AA?AA is not set (empty for no RandAugment)}"
  local facts splits pool
  facts=$("$PYTHON" -m datasets.registry "$DATA_SET") || exit 1
  splits=$(eval "$facts"; echo "$SPLITS")
  pool=$(eval "$facts"; echo "$POOL")
  splits=${SPLITS:-$splits}
  EVAL_CKPT=${EVAL_CKPT:-checkpoint-$((EPOCHS - 1)).pth}
  svfap_batch "$TOTAL_BATCH"
  local split pred_dirs=() fold_names=()
  for split in $splits; do
    local data=$SPLIT_DIR/$split out=$OUTPUT_DIR/$split
    if [ "$split" = . ]; then data=$SPLIT_DIR; out=$OUTPUT_DIR; fi
    local common=(--model "$MODEL" --data_set "$DATA_SET" --data_path "$data" --data_root "$DATA_ROOT"
      --batch_size "$BATCH_SIZE" --test_num_segment "$TEST_NUM_SEGMENT" --test_num_crop "$TEST_NUM_CROP"
      --device "$DEVICE")
    if [ "${SKIP_TRAIN:-0}" != 1 ]; then
      # shellcheck disable=SC2086  # OPT_BETAS is two numbers
      svfap_torchrun run_finetune.py "${common[@]}" --finetune "$PRETRAINED" \
        --update_freq "$UPDATE_FREQ" --epochs "$EPOCHS" --warmup_epochs "$WARMUP_EPOCHS" \
        --lr "$LR" --min_lr "$MIN_LR" --warmup_lr "$WARMUP_LR" --weight_decay "$WEIGHT_DECAY" \
        --opt_betas $OPT_BETAS --opt_eps "$OPT_EPS" --layer_decay "$LAYER_DECAY" --drop_path "$DROP_PATH" \
        --init_scale "$INIT_SCALE" --num_frames "$NUM_FRAMES" --sampling_rate "$SAMPLING_RATE" \
        --input_size "$INPUT_SIZE" --num_sample "$NUM_SAMPLE" --aa "$AA" --reprob "$REPROB" \
        --mixup "$MIXUP" --cutmix "$CUTMIX" --smoothing "$SMOOTHING" --mixup_prob "$MIXUP_PROB" \
        --mixup_switch_prob "$MIXUP_SWITCH_PROB" --mixup_mode "$MIXUP_MODE" --compile "${COMPILE:-auto}" \
        --output_dir "$out" "$@"
    fi
    if [ "$DRY_RUN" != 1 ] && [ ! -f "$out/$EVAL_CKPT" ]; then
      svfap_die "$out/$EVAL_CKPT not found (set EVAL_CKPT to the checkpoint to test)"
    fi
    # The model, frames, size and stride come from the checkpoint.
    svfap_torchrun run_finetune.py "${common[@]}" --eval True --finetune "$out/$EVAL_CKPT" \
      --output_dir "$out/eval" "$@"
    pred_dirs+=("$out/eval")
    fold_names+=("$split")
    if [ "$pool" = each ]; then
      svfap_run "$PYTHON" -m engine.pool_folds --data_set "$DATA_SET" --pred_dirs "$out/eval"
    fi
  done
  if [ "$pool" = joint ]; then
    svfap_run "$PYTHON" -m engine.pool_folds --data_set "$DATA_SET" --pred_dirs "${pred_dirs[@]}" \
      --fold_names "${fold_names[@]}" --output_dir "$OUTPUT_DIR/pooled"
  fi
}

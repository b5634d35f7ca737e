#!/usr/bin/env bash
#SBATCH --requeue --signal=B:USR1@300
# One of the scripts as a SLURM job that puts itself back in the queue until its run is done.
# From the repository root:
#   sbatch [--nodes=1 --gpus-per-node=4 --cpus-per-task=40 --time=24:00:00 ...] \
#     scripts/slurm_job.sh scripts/voxceleb2/pretrain_base.sh [its options]
# SLURM sends its warning (--signal=B:USR1@300) to this batch shell only; a shell that waits in the
# foreground would die of it and leave the run going until the job is killed. This one passes it on
# (svfap_run), so the run saves and exits 75, and then requeues the job, which resumes the run.
# Settings for the script go in the environment as usual (NPROC_PER_NODE=4 sbatch ...).
set -uo pipefail
[ -f scripts/common.sh ] || { echo "error: submit from the repository root (sbatch scripts/slurm_job.sh ...)" >&2; exit 2; }
[ $# -ge 1 ] || { echo "error: which script? sbatch scripts/slurm_job.sh scripts/<dataset>/<recipe>.sh" >&2; exit 2; }
source scripts/common.sh

dry_run=$DRY_RUN
DRY_RUN=0 # the script itself prints its commands under DRY_RUN=1
status=0
svfap_run env DRY_RUN="$dry_run" bash "$@" || status=$?
if [ "$status" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "the run stopped to be resumed: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"

#!/bin/bash
# A study split over a SLURM job array: array task I of N runs `medtransfer run --shard I/N`, then one
# unsharded run (after every array task succeeded) reads the work back and writes the report.
#
# Submit from the login node (this script submits both jobs):
#   bash examples/slurm_array.sh experiments/configs/paper.yaml tracking.uri=http://mlflow-host:5000 \
#       output_dir=/shared/medtransfer/outputs
#
# Every node must see the same tracking store and output_dir: an MLflow server (tracking.uri=http://...)
# rather than an SQLite file, and a shared file system for output_dir (its locks/ make shards that need
# the same model wait for the one training it, and adversarial_sets/ is read by the report run).
# Shards split the adversarial sets (with their pairs); choose N up to the study's number of sets
# (`medtransfer plan --config ...` lists them). Adjust the #SBATCH lines to your cluster.
#
# Time limit and grace period: at the limit SLURM sends SIGTERM, then SIGKILL after KillWait (30 s
# by default). medtransfer stops on SIGTERM as on Ctrl-C: it ends its open MLflow runs KILLED and
# exits 143 within seconds, keeping every finished model, set and pair; resubmitting the shard redoes
# only the rest. `--signal=B:TERM@120` sends that SIGTERM 120 s before the limit, to this script's
# process (which `exec` makes medtransfer itself), so the stop never races the SIGKILL.
#SBATCH --job-name=medtransfer
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --output=medtransfer-%A_%a.out
#SBATCH --signal=B:TERM@120
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: bash $0 CONFIG.yaml [key=value ...]" >&2
    exit 2
fi

if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    # on the login node: the array, then the report run that waits for all of it
    array=$(sbatch --parsable "$0" "$@")
    report=$(sbatch --parsable --job-name=medtransfer-report --dependency="afterok:${array}" \
        --cpus-per-task=4 --mem=16G --time=2:00:00 --output=medtransfer-%j-report.out \
        --wrap "medtransfer run --config $(printf '%q ' "$@")")
    echo "submitted array job ${array} and report job ${report}"
    exit 0
fi

# one array task: shard I of N (0-based, as --shard counts; --array must start at 0)
config=$1
shift
exec medtransfer run --config "$config" --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" "$@"

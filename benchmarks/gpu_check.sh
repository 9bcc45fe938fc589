#!/usr/bin/env bash
# The GPU check, unattended, in under 5 minutes on one GPU (each step has its own time limit):
#   1. benchmarks/bench_gpu.py: ResNet-50 and DenseNet-121 at 224 px, fp32 and bf16 + channels-last,
#      crafting against the bare forward+backward;
#   2. benchmarks/bench_study_crafting.py on the GPU: the study's crafting path against a bare loop
#      (FGSM and 10-step iterative FGSM);
#   3. benchmarks/gpu_study_check.py: a smoke study with crafting.device=auto that asserts the GPU did
#      the training, the crafting and the scoring.
# Output goes to the terminal and to $GPU_CHECK_LOG (default gpu_check.log). Exit status: 0 when every
# step passed, 2 when no CUDA device is visible, else the number of failed steps.
#
#   bash benchmarks/gpu_check.sh             # on a machine with a GPU, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run   # print the steps and their limits, run nothing
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LOG=${GPU_CHECK_LOG:-gpu_check.log}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS=(
  "110|$PYTHON benchmarks/bench_gpu.py --modes fp32 bf16+channels_last --size 224 --batch 64 --steps 10 --repeats 2"
  "90|$PYTHON benchmarks/bench_study_crafting.py --device cuda --size 224 --batch 64 --batches 4 --rounds 3"
  "90|$PYTHON benchmarks/gpu_study_check.py --device cuda"
)
if [[ "${1:-}" == "--dry-run" ]]; then
  for step in "${STEPS[@]}"; do echo "limit ${step%%|*} s: ${step#*|}"; done
  exit 0
fi
if ! $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); run it on a GPU machine" >&2
  exit 2
fi
: > "$LOG"
$PYTHON -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" | tee -a "$LOG"
failed=0
for step in "${STEPS[@]}"; do
  limit=${step%%|*} command=${step#*|}
  echo "== $command (limit $limit s)" | tee -a "$LOG"
  start=$SECONDS
  timeout "$limit" $command 2>&1 | grep -v -e "Warning" -e "warnings.warn" | tee -a "$LOG"
  status=${PIPESTATUS[0]}
  echo "== exit $status after $((SECONDS - start)) s" | tee -a "$LOG"
  [[ $status -eq 0 ]] || failed=$((failed + 1))
done
echo "gpu_check: $failed of ${#STEPS[@]} steps failed" | tee -a "$LOG"
exit $failed

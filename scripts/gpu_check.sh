#!/usr/bin/env bash
# The GPU check (docs/scaling.md, "Measuring the GPU path"): everything about fairdistill that needs a CUDA device,
# tested and measured in one command; every number in $OUT/gpu_check.json, a table in $OUT/gpu_check.md (OUT
# defaults to ./gpu_check_out). Exit status 1 when a part failed, 2 for bad arguments.
#   PYTHONPATH=. bash scripts/gpu_check.sh              # on a machine with one CUDA GPU, under 8 minutes
#   PYTHONPATH=. bash scripts/gpu_check.sh --dry-run    # anywhere: what can be checked without a GPU
# Every option: bash scripts/gpu_check.sh --help. PYTHON picks the interpreter (default: python3, else python).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$(command -v python3 || command -v python || true)}"
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
  echo "error: no Python interpreter (PYTHON=${PYTHON:-unset}, and none on PATH); install Python 3.10 or later, or set PYTHON=/path/to/python" >&2
  exit 2
fi
# nothing is downloaded: the hub and W&B stay off in every command the check runs
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
exec "$py" "$here/../benchmarks/gpu_check.py" "$@"

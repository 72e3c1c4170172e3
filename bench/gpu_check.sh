#!/usr/bin/env bash
# The GPU check: CUDA training, NCCL with two ranks when there are two GPUs, FAISS on the GPU
# and the online path over a GPU index, each figure beside the CPU's (bench/gpu_check.py).
# At most 10 minutes. On a machine without a GPU it says so and exits 0.
#   bench/gpu_check.sh [OUT]      (a GPU host is set up with `make setup-gpu`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-artifacts/gpu-check}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no GPU here: torch.cuda.is_available() is False$(command -v nvidia-smi >/dev/null || echo ', and there is no nvidia-smi'); nothing to check"
    exit 0
fi
if ! "$PY" -c "import faiss, sys; sys.exit(0 if faiss.get_num_gpus() > 0 else 1)" 2>/dev/null; then
    echo "torch sees a GPU but faiss does not: run 'make setup-gpu' (faiss-gpu-cu12 in place of faiss-cpu)"
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
cd bench && exec timeout 600 "../$PY" gpu_check.py --out "../$OUT"

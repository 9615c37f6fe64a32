#!/usr/bin/env bash
# GPU check, under 5 minutes on one H200: the CUDA path (bf16 autocast, pinned memory, non-blocking copies, CUDA
# CTC) against the CPU on one batch, then the `base` preset trained for ~300 steps on a generated 2 h synthetic
# corpus with train.device=cuda. Prints audio seconds per second and peak GPU memory; writes
# results/bench/gpu_check.json and .md. Run from anywhere, with the venv active (or pass PYTHON=...).
#   bash bench/gpu_check.sh                                # defaults: --train-hours 2 --epochs 5
#   bash bench/gpu_check.sh --train-hours 0.5 --epochs 2   # about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
export TQDM_DISABLE=1
exec timeout 290 "${PYTHON:-python}" -m bench.gpu_check "$@"

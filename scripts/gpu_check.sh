#!/usr/bin/env bash
# Verify the GPU path on this machine, offline, in a few minutes: a LLaDA-8B-shaped model (2 layers, full vocabulary)
# with random weights, bf16 and NF4 loading, generation with and without the KV cache, the paper recipe's training
# steps with and without elbo_grad_chunk_size, ZeRO-2 when more than one GPU is visible; peak memory per step next to
# docs/memory.md's arithmetic. Writes one JSON report and exits non-zero when a check failed.
#   scripts/gpu_check.sh [--report gpu_check.json] [--layers 2] [--steps 2] [--cpu]
# Environment: PYTHON (default: .venv/bin/python when it exists, else python3). The bulk is dipod_trl/commands/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
# Offline: everything the check needs is made on the spot (no hub lookups, no telemetry, no waiting on timeouts).
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
exec "$python" -m dipod_trl.commands.gpu_check "$@"

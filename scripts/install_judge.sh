#!/usr/bin/env bash
# The LLM judge's environment: vLLM in a virtual environment of its own, the one recipes/slurm/judge.slurm runs
# (`$JUDGE_VENV/bin/vllm serve MODEL`). vLLM pins its own torch and transformers (vLLM 0.33: torch 2.14,
# transformers < 5.21), which the trainer's environment cannot share, so it never goes into .venv.
#   scripts/install_judge.sh [--dry-run] [--venv PATH] [--vllm SPEC]
# Options (or environment):
#   --venv PATH   (JUDGE_VENV)    the environment to create or update (default .venv-judge)
#   --vllm SPEC   (VLLM_SPEC)     the vLLM requirement (default vllm==0.33.0, the version docker/Dockerfile.judge uses)
#   --dry-run                     print the commands, run nothing
# Needs a Linux machine with an NVIDIA GPU to serve (vLLM's wheels are CUDA builds); installing works anywhere pip does.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${JUDGE_VENV:-.venv-judge}"
vllm_spec="${VLLM_SPEC:-vllm==0.33.0}"
dry_run=0
usage="usage: scripts/install_judge.sh [--dry-run] [--venv PATH] [--vllm SPEC]"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --venv) venv="${2:?--venv needs a path. $usage}"; shift ;;
        --vllm) vllm_spec="${2:?--vllm needs a requirement, e.g. vllm==0.33.0. $usage}"; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "install_judge.sh: unknown argument '$1'. $usage" >&2; exit 2 ;;
    esac
    shift
done
if [ "$venv" -ef .venv ] || [ "${venv%/}" = .venv ]; then
    echo "install_judge.sh: $venv is the trainer's environment; vLLM would replace its torch and transformers." \
        "Give the judge its own (--venv .venv-judge)." >&2
    exit 2
fi

run() {
    echo "+ $*"
    if [ "$dry_run" = 0 ]; then "$@"; fi
}
if [ ! -x "$venv/bin/python" ]; then
    run "${PYTHON:-python3}" -m venv "$venv"
fi
run "$venv/bin/python" -m pip install --quiet --upgrade pip
run "$venv/bin/python" -m pip install --quiet "$vllm_spec"
run "$venv/bin/vllm" --version
echo "judge environment: $venv (recipes/slurm/judge.slurm runs $venv/bin/vllm; set JUDGE_VENV=$venv if not .venv-judge)"

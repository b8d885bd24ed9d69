#!/usr/bin/env bash
# One node's share of a SLURM training job: `srun` runs this once per node (see train.slurm, train_multinode.slurm).
# It starts `accelerate launch` with this node's rank, the first node as the rendezvous host, and resumes from the
# newest checkpoint in the output directory when there is one (a requeued or resubmitted job continues).
#   bash recipes/slurm/launch.sh RECIPE [--key value ...]
# Environment: ACCELERATE_CONFIG (default recipes/accelerate/zero2.yaml), GPUS_PER_NODE (default: SLURM's count, or
# 8), MAIN_PROCESS_PORT (default 29500), OUTPUT_DIR (default: the recipe's output_dir), JUDGE_URL_FILE (a file the
# judge job writes its URL to: wait for it and export DIPOD_JUDGE_URL).
set -euo pipefail

recipe="${1:?usage: launch.sh RECIPE [--key value ...]}"
shift

num_machines="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
machine_rank="${SLURM_NODEID:-0}"
gpus_per_node="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
main_host="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" | head -n 1)"
port="${MAIN_PROCESS_PORT:-29500}"
config="${ACCELERATE_CONFIG:-recipes/accelerate/zero2.yaml}"
output_dir="${OUTPUT_DIR:-$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["output_dir"])' "$recipe")}"

resume=()
last=""
if [ -d "$output_dir" ]; then
    last="$(find "$output_dir" -maxdepth 1 -type d -name 'checkpoint-*' | sort -V | tail -n 1)"
fi
if [ -n "$last" ]; then
    echo "node $machine_rank: resuming from $last"
    resume=(--resume_from_checkpoint "$last")
fi

if [ -n "${JUDGE_URL_FILE:-}" ]; then
    until [ -s "$JUDGE_URL_FILE" ] && curl -sf "$(cat "$JUDGE_URL_FILE")/models" >/dev/null; do
        echo "node $machine_rank: waiting for the judge ($JUDGE_URL_FILE)"
        sleep 30
    done
    DIPOD_JUDGE_URL="$(cat "$JUDGE_URL_FILE")"
    export DIPOD_JUDGE_URL
fi

echo "node $machine_rank of $num_machines: $gpus_per_node processes, rendezvous at $main_host:$port"
exec accelerate launch \
    --config_file "$config" \
    --num_machines "$num_machines" \
    --num_processes "$((num_machines * gpus_per_node))" \
    --machine_rank "$machine_rank" \
    --main_process_ip "$main_host" \
    --main_process_port "$port" \
    --rdzv_backend static \
    -m dipod_trl "$recipe" --output_dir "$output_dir" "${resume[@]}" "$@"

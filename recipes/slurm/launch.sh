#!/usr/bin/env bash
# One node's share of a SLURM training job: `srun` runs this once per node (see train.slurm, train_multinode.slurm).
# It starts `accelerate launch` with this node's rank, the first node as the rendezvous host, and resumes from the
# newest checkpoint in the output directory when there is one (a requeued or resubmitted job continues).
#   bash recipes/slurm/launch.sh RECIPE [--key value ...]
# The output directory is the one the trainer will use: the recipe's output_dir, overridden by OUTPUT_DIR, overridden
# by --output_dir on the command line, resolved by the trainer's own parser (python -m dipod_trl.recipe_value). When
# it holds a checkpoint-N folder and the command line chooses no checkpoint, the trainer is told
# `--resume_from_checkpoint true`: it resumes from the newest checkpoint in that directory, and only there.
# Environment: ACCELERATE_CONFIG (default recipes/accelerate/zero2.yaml), GPUS_PER_NODE (default: SLURM's count, or
# 8), MAIN_PROCESS_PORT (default 29500), OUTPUT_DIR (see above), JUDGE_URL_FILE (a file the judge job writes its URL
# to: wait for it and export DIPOD_JUDGE_URL).
set -euo pipefail

recipe="${1:?usage: launch.sh RECIPE [--key value ...]}"
shift

num_machines="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
machine_rank="${SLURM_NODEID:-0}"
gpus_per_node="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
main_host="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" | head -n 1)"
port="${MAIN_PROCESS_PORT:-29500}"
config="${ACCELERATE_CONFIG:-recipes/accelerate/zero2.yaml}"
overrides=("$@")
if [ -n "${OUTPUT_DIR:-}" ]; then
    overrides=(--output_dir "$OUTPUT_DIR" "$@")  # the command line still wins
fi
resolved="$(python -m dipod_trl.recipe_value output_dir,resume_from_checkpoint "$recipe" "${overrides[@]}")"
output_dir="$(sed -n 1p <<< "$resolved")"
chosen_checkpoint="$(sed -n 2p <<< "$resolved")"

resume=()
if [ -z "$chosen_checkpoint" ] && [ -n "$(find "$output_dir" -maxdepth 1 -type d -regex '.*/checkpoint-[0-9]+' \
        2>/dev/null | head -n 1)" ]; then
    echo "node $machine_rank: resuming from the newest checkpoint in $output_dir"
    resume=(--resume_from_checkpoint true)
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
    -m dipod_trl "$recipe" --output_dir "$output_dir" "$@" "${resume[@]}"

#!/usr/bin/env bash
# One node's share of a SLURM training job: `srun` runs this once per node (see train.slurm, train_multinode.slurm).
# It starts `accelerate launch` with this node's rank, the first node as the rendezvous host, and resumes from the
# newest checkpoint in the output directory when there is one (a requeued or resubmitted job continues).
#   bash recipes/slurm/launch.sh RECIPE [--key value ...]
# The output directory is the one the trainer will use: the recipe's output_dir, overridden by OUTPUT_DIR, overridden
# by --output_dir on the command line, resolved by the trainer's own parser (python -m dipod_trl.commands.resolved_values). When
# it holds a complete checkpoint-N folder and the command line chooses no checkpoint, the trainer is told
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

if [ -n "${JUDGE_URL_FILE:-}" ]; then
    # The judge job may still be queued or loading its model: wait for it, JUDGE_WAIT seconds at most (default 3600),
    # asking every JUDGE_POLL seconds (default 30). Its key (JUDGE_KEY_FILE, default the URL file + .key, where
    # judge.slurm writes it) goes to the trainer as DIPOD_JUDGE_API_KEY, never printed.
    judge_wait="${JUDGE_WAIT:-3600}"
    judge_poll="${JUDGE_POLL:-30}"
    judge_deadline=$((SECONDS + judge_wait))
    until [ -s "$JUDGE_URL_FILE" ] && curl -sf "$(sed 's|/v1/*$||' "$JUDGE_URL_FILE")/health" >/dev/null; do
        left=$((judge_deadline - SECONDS))
        if [ "$left" -le 0 ]; then
            state="not written"
            [ -s "$JUDGE_URL_FILE" ] && state="there, but the server at its URL does not answer"
            echo "node $machine_rank: no judge came up in ${judge_wait}s: $JUDGE_URL_FILE is $state. Is the judge" \
                 "job (recipes/slurm/judge.slurm) running? Its log says why not. Set JUDGE_WAIT to wait longer." >&2
            exit 1
        fi
        echo "node $machine_rank: waiting for the judge ($JUDGE_URL_FILE)"
        sleep "$((left < judge_poll ? left : judge_poll))"
    done
    DIPOD_JUDGE_URL="$(cat "$JUDGE_URL_FILE")"
    export DIPOD_JUDGE_URL
    judge_key_file="${JUDGE_KEY_FILE:-$JUDGE_URL_FILE.key}"
    if [ -s "$judge_key_file" ]; then
        DIPOD_JUDGE_API_KEY="$(cat "$judge_key_file")"
        export DIPOD_JUDGE_API_KEY
    fi
fi

overrides=("$@")
if [ -n "${OUTPUT_DIR:-}" ]; then
    overrides=(--output_dir "$OUTPUT_DIR" "$@")  # the command line still wins
fi
resolved="$(python -m dipod_trl.commands.resolved_values output_dir,resume_from_checkpoint "$recipe" "${overrides[@]}")"
output_dir="$(sed -n 1p <<< "$resolved")"
chosen_checkpoint="$(sed -n 2p <<< "$resolved")"

resume=()
# A checkpoint is complete once its marker is written (last, after every file): a job killed during its first save
# leaves none, and starts afresh rather than failing on every requeue (the trainer counts an output_dir holding only
# checkpoint folders cut short, the run record and the model card as empty, and says so in the log).
if [ -z "$chosen_checkpoint" ] && [ -n "$(find "$output_dir" -mindepth 2 -maxdepth 2 -type f \
        -regex '.*/checkpoint-[0-9]+/checkpoint_complete.json' 2>/dev/null | head -n 1)" ]; then
    echo "node $machine_rank: resuming from the newest checkpoint in $output_dir"
    resume=(--resume_from_checkpoint true)
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

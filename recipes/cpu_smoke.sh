#!/usr/bin/env bash
# Any GPU recipe (recipes/paper/*.yaml, recipes/diffu_grpo/*.yaml, recipes/sdar/*.yaml, recipes/llada2/*.yaml) for two
# optimizer steps on a CPU: the recipe's objective, estimator, rewards, prompts and LoRA settings as they are, on the
# built-in tiny model (as a block-diffusion model for the SDAR and LLaDA2 recipes) with tiny lengths,
# to check a recipe (or an override of it) end to end in about a minute before it goes to a GPU cluster:
#   bash recipes/cpu_smoke.sh recipes/paper/fpo_gsm8k.yaml [--key value ...]
# Later flags win, so anything after the recipe overrides the set below too (e.g. --dataset_source data.jsonl for a
# local copy of the task's data, or --model_name_or_path for another small checkpoint).
set -euo pipefail
recipe="${1:?usage: bash recipes/cpu_smoke.sh RECIPE [--key value ...]}"
shift
model=tiny
case "$recipe" in
    */sdar/*|*/llada2/*) model=tiny_block ;;  # block-diffusion recipes: the tiny network as a block-diffusion model
esac
cpu_smoke=(
    --bf16 false --load_in_4bit false --use_bnb_nested_quant false  # bf16 and 4-bit QLoRA need CUDA
    --model_name_or_path "$model" --lora_target_modules qkv out up down  # the built-in tiny model and its linear layers
    --eval_strategy no --drift_num_orders 0                          # no evaluation, no drift monitor
    --max_prompt_length 48 --prompt_truncation left                  # the tiny model holds 64 positions
    --max_completion_length 8 --block_length 4 --diffusion_steps 4
    --num_generations 2 --per_device_train_batch_size 2 --gradient_accumulation_steps 1
    --elbo_chunk_size 2 --elbo_grad_chunk_size 2
    --num_train_examples 8 --max_steps 2 --save_strategy no --logging_steps 1 --report_to none
    --output_dir outputs/cpu_smoke
)
exec "${PYTHON:-python}" -m dipod_trl "$recipe" "${cpu_smoke[@]}" "$@"

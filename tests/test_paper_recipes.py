"""recipes/paper/*.yaml against the paper's release (github.com/Astro-Eric/DiPOD-release), key by key.

The tables below were read from the release's files; each row names the file a value comes from. A recipe passes when
it parses into the CLI's dataclasses, every release value is what the parsed config holds, every deliberate difference
holds the value this project uses instead, and the recipe sets no key the tables do not account for.
"""

import os

import pytest
import yaml
from trl import ModelConfig

from dipod_trl.commands.recipe import parse_recipe
from dipod_trl.commands.task_data import TaskArguments
from dipod_trl.config import DiPODConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(ROOT, "recipes", "paper")

D1 = "language/d1/diffu-grpo/"
D1_YAML = D1 + "slurm_scripts/train.yaml"
D1_TRAINER = D1 + "diffu_grpo_trainer.py"
D1_CONFIG = D1 + "diffu_grpo_config.py"
D1_TRAIN = D1 + "diffu_grpo_train.py"
SPG = "language/SPG/spg/"
SPG_YAML = SPG + "slurm_scripts/train.yaml"
SPG_TRAINER = SPG + "spg_trainer.py"
SPG_CONFIG = SPG + "diffu_grpo_config.py"

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]

# Shared by every run of both codebases (d1's and SPG's train.yaml agree on these; the LoRA targets are in each
# codebase's diffu_grpo_train.py).
SHARED = [
    ("use_peft", True, "train.yaml"),
    ("dtype", "bfloat16", "train.yaml (torch_dtype)"),
    ("lora_r", 128, "train.yaml"),
    ("lora_alpha", 64, "train.yaml"),
    ("lora_dropout", 0.05, "train.yaml"),
    ("lora_target_modules", LORA_TARGETS, "diffu_grpo_train.py (LoraConfig)"),
    ("load_in_4bit", True, "train.yaml; diffu_grpo_train.py: BitsAndBytesConfig(load_in_4bit=True)"),
    ("bnb_4bit_quant_type", "nf4", "diffu_grpo_train.py: bnb_4bit_quant_type='nf4'"),
    ("use_bnb_nested_quant", True, "diffu_grpo_train.py: bnb_4bit_use_double_quant=True"),
    ("seed", 42, "train.yaml"),
    ("prompt_style", "d1", "data_utils.py (SYSTEM_PROMPT and the question in one user message)"),
    ("bf16", True, "train.yaml"),
    ("adam_beta1", 0.9, "train.yaml"),
    ("adam_beta2", 0.99, "train.yaml"),
    ("weight_decay", 0.1, "train.yaml"),
    ("max_grad_norm", 0.2, "train.yaml"),
    ("warmup_steps", 0.0001, "train.yaml (warmup_ratio: 0.0001)"),
    ("logging_steps", 1, "train.yaml"),
    ("learning_rate", 3e-6, "train.yaml"),
    ("lr_scheduler_type", "constant_with_warmup", "train.yaml"),
    ("num_generations", 6, "train.yaml"),
    ("save_strategy", "steps", "train.yaml"),
    ("save_steps", 100, "train.yaml"),
    ("save_total_limit", 500, "train.yaml"),
    ("max_completion_length", 256, "train.yaml"),
    ("block_length", 32, "train.yaml"),
    ("diffusion_steps", 128, "train.yaml"),
    ("remasking", "low_confidence", "train.yaml"),
    ("cfg_scale", 0.0, "diffu_grpo_config.py default"),
    ("model_name_or_path", "GSAI-ML/LLaDA-8B-Instruct", "sbatch MODEL_PATH"),
    ("trust_remote_code", True, "diffu_grpo_train.py: AutoModel.from_pretrained(trust_remote_code=True)"),
    ("prompt_truncation", "left", "the trainer: prompt_ids[:, -max_prompt_length:]"),
    ("scale_rewards", "none", "the trainer: advantages = rewards - mean_grouped_rewards"),
    ("train_split", "train", "diffu_grpo_train.py: the train split (Countdown, Sudoku: less the last 500)"),
]

FPO = SHARED + [
    ("objective", "fpo", D1_YAML + " (fpo: True)"),
    ("dipod_beta", 0.05, "sbatch --dipod_beta 0.05"),
    ("dipod_normalization", "sequence", D1_TRAINER + ": -current_elbos.mean() * dipod_beta"),
    ("epsilon", 0.5, D1_YAML),
    ("beta", 0.04, D1_YAML),
    ("kl_estimator", "linear_sequence", D1_TRAINER + ": beta * (current_elbos - ref_elbos).mean()"),
    ("elbo_num_samples", 4, D1_TRAINER + ": DiffuGRPOTrainer(elbo_num_samples=4)"),
    ("elbo_estimator", "mc", D1_TRAINER + ": _get_sequence_elbo, independent uniform mask ratios"),
    ("p_mask_prompt", 0.0, D1_TRAINER + ": the FPO branch never masks the prompt"),
    ("max_prompt_length", 200, D1_YAML),
    ("per_device_train_batch_size", 6, D1_YAML),
    ("gradient_accumulation_steps", 2, D1_YAML),
    ("num_train_epochs", 2, D1_YAML),
    ("temperature", 0.9, D1_CONFIG + " default"),
]

FPO_TASKS = {  # task: [(key, value, source)], the per-task sbatch of language/d1/diffu-grpo/slurm_scripts/
    "gsm8k": [("task", "gsm8k", "gsm_base_dipod_beta0.05.sbatch"), ("num_iterations", 12, "gsm_...sbatch")],
    "math500": [
        ("task", "math500", "math_base_dipod_beta0.05.sbatch (DATASET=math)"),
        ("num_iterations", 12, "math_base_dipod_beta0.05.sbatch"),
        ("dataset_source", "ankner/math-500", D1 + "data_utils.py get_math_questions"),
        ("train_split", "train", D1_TRAIN + ": get_math_questions('train')"),
    ],
    "countdown": [("task", "countdown", "countdown_base_dipod_beta0.05.sbatch"),
                  ("num_iterations", 8, "countdown_base_dipod_beta0.05.sbatch")],
    # The sbatch's `--temperature 0.3` follows a line without a backslash: it never reaches the run (0.9 above).
    "sudoku": [("task", "sudoku", "sudoku_base_dipod_beta0.05.sbatch"),
               ("num_iterations", 8, "sudoku_base_dipod_beta0.05.sbatch")],
}

SPG_SBATCH = SPG + "slurm_scripts/spg_mix/"
SPG_RUN = SHARED + [
    ("objective", "spg", "sbatch --trainer spg"),
    ("dipod_beta", 0.05, "sbatch --dipod_beta 0.05"),
    ("dipod_normalization", "token", SPG_TRAINER + ": dipod_beta * (-elbo * length).sum() / length.sum()"),
    ("spg_negative_bound", "mix", "sbatch --logp_estimation mix"),
    ("spg_mix_weight", 0.5, "sbatch --mix_weight 0.5"),
    ("beta", 0.0, "sbatch --beta 0.0"),
    ("num_iterations", 4, "sbatch NUM_ITER=4"),
    ("elbo_estimator", "block_random", "sbatch --forward_type block_random --min_t 0 --max_t 1"),
    ("elbo_num_samples", 2, "sbatch --num_t 2"),
    ("p_mask_prompt", 0.15, SPG_YAML + " (p_mask_prompt: 0.15, use_mask_prompt: true)"),
    ("num_train_epochs", 10, SPG_YAML),
]

SPG_TASKS = {  # the per-task sbatch of language/SPG/spg/slurm_scripts/spg_mix/
    "gsm8k": ("gsm_base_spg_mix_beta1.5_weight0.5_dipod_beta0.05.sbatch", "gsm8k", 1.5),
    "math500": ("math_base_spg_mix_beta1.5_weight0.5_dipod_beta0.05.sbatch", "math", 1.5),
    "countdown": ("countdown_base_spg_mix_beta1.5_weight0.5_dipod_beta0.05.sbatch", "countdown", 1.5),
    "sudoku": ("sudoku_new_3shot_base_spg_mix_beta1.0_weight0.5_dipod_beta0.05.sbatch", "sudoku_new", 1.0),
}


def spg_rows(task):
    sbatch, dataset, eubo_beta = SPG_TASKS[task]
    rows = SPG_RUN + [
        ("task", task, f"{sbatch} (DATASET={dataset})"),
        ("spg_eubo_beta", eubo_beta, f"{sbatch} --eubo_beta {eubo_beta}"),
        ("num_generations", 6, f"{sbatch} --num_generations 6"),
    ]
    if task == "sudoku":
        rows += [
            ("temperature", 0.3, f"{sbatch} --temperature 0.3"),
            ("few_shot", 3, f"{sbatch} FEW_SHOT=3"),
            ("max_prompt_length", 1500, f"{sbatch} --max_prompt_length 1500"),
            ("per_device_train_batch_size", 3, f"{sbatch} --per_device_train_batch_size 3"),
            ("gradient_accumulation_steps", 4, f"{sbatch} --gradient_accumulation_steps 4"),
        ]
    else:
        rows += [
            ("temperature", 0.9, SPG_CONFIG + " default"),
            ("max_prompt_length", 200, SPG_YAML),
            ("per_device_train_batch_size", 6, f"{sbatch} --per_device_train_batch_size 6"),
            ("gradient_accumulation_steps", 2, f"{sbatch} --gradient_accumulation_steps 2"),
        ]
    if task == "math500":
        rows += [("dataset_source", "ankner/math-500", SPG + "data_utils.py get_math_questions"),
                 ("train_split", "train", SPG + "diffu_grpo_train.py: get_math_questions('train')")]
    return rows


# Where the recipes deliberately hold another value: (key, release value, ours, why). docs/results.md lists these too.
DIFFERENCES = [
    ("sync_ref_model", True, False, "train.yaml says True: a no-op with LoRA in the release (the reference is the base "
     "model, adapter disabled) and without a KL term; TRL refuses it with PEFT or beta 0"),
]

# Keys the release has no counterpart for: held-out monitoring and logging, which do not enter the update, and the
# memory knobs that split the same computation into chunks (tests/test_grad_chunks.py: identical losses and gradients).
NOT_IN_RELEASE = {"output_dir", "report_to", "eval_split", "eval_strategy", "eval_steps", "num_eval_examples",
                  "num_generations_eval", "per_device_eval_batch_size", "drift_num_orders", "drift_num_sequences",
                  "drift_every", "elbo_chunk_size", "elbo_grad_chunk_size"}


def recipe_rows(name):
    method, task = name.split("_", 1)
    return FPO + FPO_TASKS[task] if method == "fpo" else spg_rows(task)


NAMES = [f"{method}_{task}" for method in ("fpo", "spg") for task in ("gsm8k", "math500", "countdown", "sudoku")]


def parsed(name):
    path = os.path.join(PAPER, f"{name}.yaml")
    # bf16 needs CUDA to parse; the recipe's own value is checked from the YAML below.
    objects = parse_recipe([ModelConfig, TaskArguments, DiPODConfig], [path, "--bf16", "false"])
    with open(path) as f:
        return objects, yaml.safe_load(f)


def value_of(objects, key):
    holders = [o for o in objects if hasattr(o, key)]
    assert holders, f"no dataclass has {key!r}"
    value = getattr(holders[0], key)
    return value.value if hasattr(value, "value") else value  # enums such as lr_scheduler_type


def test_the_flagship_recipe_is_the_papers_fpo_gsm8k_run_key_for_key():
    """recipes/gsm8k.yaml, the run the README starts with, sets the same keys to the same values as the paper's
    FPO + DiPOD GSM8K recipe (checked against the release below); only its output folder differs."""
    with open(os.path.join(os.path.dirname(PAPER), "gsm8k.yaml")) as f:
        flagship = yaml.safe_load(f)
    with open(os.path.join(PAPER, "fpo_gsm8k.yaml")) as f:
        paper = yaml.safe_load(f)
    assert flagship == {**paper, "output_dir": "outputs/gsm8k"}


@pytest.mark.parametrize("name", NAMES)
def test_paper_recipe_equals_the_release_key_for_key(name):
    objects, raw = parsed(name)
    rows = recipe_rows(name)
    for key, release_value, source in rows:
        got = raw[key] if key == "bf16" else value_of(objects, key)
        assert got == pytest.approx(release_value) if isinstance(release_value, float) else got == release_value, (
            f"{name}: {key} = {got!r}, the release has {release_value!r} ({source})"
        )
    for key, release_value, ours, why in DIFFERENCES:
        assert value_of(objects, key) == ours and ours != release_value, f"{name}: {key} ({why})"
    accounted = {row[0] for row in rows} | {row[0] for row in DIFFERENCES} | NOT_IN_RELEASE
    assert set(raw) <= accounted, f"{name} sets keys the release table does not cover: {set(raw) - accounted}"
    # and the table's release values are what the recipe file itself says (no default standing in for a value)
    missing = {key for key, _, _ in rows if key not in raw and key not in ("cfg_scale",)}
    assert not missing, f"{name} leaves release values to defaults: {missing}"

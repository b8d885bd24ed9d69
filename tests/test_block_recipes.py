"""recipes/sdar and recipes/llada2: FPO + DiPOD and SPG + DiPOD on GSM8K and Countdown for the block-diffusion
families. Each recipe parses into the CLI's dataclasses, names the published checkpoint, keeps the paper recipe's
objective settings, decodes with its family's published sampler settings, and runs on a CPU through
recipes/cpu_smoke.sh on the tiny block-diffusion stand-in."""

import ast
import json
import math
import os
import re
import subprocess
import sys

import pytest
import yaml
from trl import ModelConfig

from dipod_trl.commands.recipe import parse_recipe
from dipod_trl.commands.task_data import TaskArguments
from dipod_trl.config import DiPODConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = [f"{family}/{objective}_{task}" for family in ("sdar", "llada2") for objective in ("fpo", "spg")
           for task in ("gsm8k", "countdown")]
# family: published checkpoint, block length and steps per block of its published RL rollouts (DARE's recipes),
# temperature
FAMILIES = {"sdar": ("JetLM/SDAR-8B-Chat", 4, 4, 1.0), "llada2": ("inclusionAI/LLaDA2.0-mini", 32, 16, 0.6)}
# the paper recipe's settings each block recipe keeps
SHARED_KEYS = ["num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
               "learning_rate", "max_prompt_length", "max_completion_length", "lora_r", "lora_alpha", "seed"]
OBJECTIVE_KEYS = {"fpo": ["objective", "dipod_beta", "dipod_normalization", "epsilon", "beta", "num_iterations",
                          "elbo_num_samples", "kl_estimator", "scale_rewards"],
                  "spg": ["objective", "dipod_beta", "dipod_normalization", "spg_negative_bound", "spg_mix_weight",
                          "spg_eubo_beta", "beta", "num_iterations", "elbo_num_samples", "scale_rewards"]}


def parsed(path):
    objects = parse_recipe([ModelConfig, TaskArguments, DiPODConfig], [path, "--bf16", "false"])
    return {key: value for o in objects for key, value in vars(o).items()}


def test_the_block_recipes_are_the_eight_runs():
    found = sorted(f"{family}/{f[:-5]}" for family in FAMILIES
                   for f in os.listdir(os.path.join(ROOT, "recipes", family)) if f.endswith(".yaml"))
    assert found == sorted(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_block_recipe_keeps_the_paper_objective_and_the_published_sampler(name):
    family, run = name.split("/")
    objective, task = run.split("_")
    recipe = parsed(os.path.join(ROOT, "recipes", f"{name}.yaml"))
    paper = parsed(os.path.join(ROOT, "recipes", "paper", f"{run}.yaml"))
    model, block_length, steps_per_block, temperature = FAMILIES[family]
    assert recipe["model_name_or_path"] == model and recipe["trust_remote_code"] is False
    assert recipe["task"] == task and recipe["dipod_beta"] > 0
    for key in OBJECTIVE_KEYS[objective] + SHARED_KEYS:
        assert recipe[key] == paper[key], key
    assert recipe["block_length"] == block_length and recipe["temperature"] == temperature
    blocks = recipe["max_completion_length"] // block_length
    assert recipe["diffusion_steps"] == steps_per_block * blocks
    # SPG's block_random masking is the block model's own factorisation: not used; the prompt stays clean
    assert recipe["elbo_estimator"] != "block_random" and recipe["p_mask_prompt"] == 0.0
    with open(os.path.join(ROOT, "recipes", f"{name}.yaml")) as f:
        assert f"bash recipes/cpu_smoke.sh recipes/{name}.yaml" in f.read()
    assert set(yaml.safe_load(open(os.path.join(ROOT, "recipes", f"{name}.yaml")))) <= set(recipe) | {"bf16"}


@pytest.mark.slow  # a training process: about 10 s of CPU, more on a busy machine
@pytest.mark.parametrize("name", ["sdar/spg_countdown", "llada2/fpo_gsm8k"])
def test_cpu_smoke_runs_a_block_recipe_on_the_tiny_block_model(tmp_path, name):
    data = tmp_path / "data.jsonl"
    if name.endswith("gsm8k"):
        rows = [{"question": f"Tom has {i} apples and buys 3 more. How many now?", "answer": f"#### {i + 3}"}
                for i in range(8)]
    else:
        rows = [{"nums": [i, 3, 5], "target": i + 8} for i in range(8)]
    data.write_text("\n".join(map(json.dumps, rows)))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ROOT}
    result = subprocess.run(
        ["bash", "recipes/cpu_smoke.sh", f"recipes/{name}.yaml", "--dataset_source", str(data),
         "--output_dir", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [ast.literal_eval(match) for match in re.findall(r"\{'loss'.*?\}", result.stdout + result.stderr)]
    assert len(logs) == 2 and all(math.isfinite(float(log["loss"])) for log in logs)
    assert all("dipod/term" in log for log in logs)
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["auto_mapping"]["base_model_class"] == "TinyBlockMDLMForBlockDiffusion"  # the block stand-in

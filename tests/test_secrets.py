"""Secrets given to a run never reach its output folder: a recipe's hub_token (and judge key and URL credentials) is
found in none of the files a real run writes, checkpoints included."""

import os

import pytest
import torch
import yaml

from dipod_trl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
HUB_TOKEN = "hf_SecretTokenThatMustNotBeSaved0123"
JUDGE_KEY = "sk-judge-key-that-must-not-be-saved"
JUDGE_PASSWORD = "judge-url-password-not-to-save"


def files_holding(folder, secrets) -> dict[str, list[str]]:
    """Every file under `folder` (bytes, read whole) that holds one of `secrets`, with the secrets it holds."""
    found, count = {}, 0
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                data = f.read()
            count += 1
            hits = [s for s in secrets if s.encode() in data or s.encode("utf-16-le") in data]
            if hits:
                found[os.path.relpath(path, folder)] = hits
    assert count > 10  # the run wrote its files
    return found


def secret_recipe(tmp_path, base: str, **extra) -> str:
    with open(os.path.join(RECIPES, base)) as f:
        values = yaml.safe_load(f)
    values.update(model_name_or_path="tiny", hub_token=HUB_TOKEN, max_steps=1, save_steps=1, save_strategy="steps",
                  logging_steps=1, disable_tqdm=True, **extra)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("command, base, extra", [
    ("train", "tiny.yaml", dict(per_device_train_batch_size=8, num_generations=4, drift_num_orders=0,
                                judge_api_key=JUDGE_KEY, judge_model="m",
                                judge_base_url=f"http://user:{JUDGE_PASSWORD}@127.0.0.1:9/v1")),
    ("sft", "tiny_sft.yaml", dict(per_device_train_batch_size=8)),
])
def test_a_recipes_hub_token_is_in_no_file_of_the_run_folder(tmp_path, command, base, extra):
    out = tmp_path / "run"
    trainer = cli.main([command, secret_recipe(tmp_path, base, **extra), "--output_dir", str(out)])
    assert trainer.state.global_step == 1 and trainer.args.hub_token == HUB_TOKEN  # the run itself keeps it
    saved = [out / "training_args.bin", out / "checkpoint-1" / "training_args.bin"]
    for path in saved:  # still the run's arguments, less the token
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None and args.max_steps == 1 and args.learning_rate == trainer.args.learning_rate
    assert files_holding(out, [HUB_TOKEN, JUDGE_KEY, JUDGE_PASSWORD]) == {}

"""Secrets given to a run never reach its output folder: a recipe's hub_token, and the key of the judge it scores
with, are found in none of the files a real run writes, checkpoints included."""

import os

import pytest
import torch
import yaml

from dipod_trl.commands import cli
from tests.helpers.servers import MODEL_NAME, JudgeServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
HUB_TOKEN = "hf_SecretTokenThatMustNotBeSaved0123"
JUDGE_KEY = "sk-judge-key-that-must-not-be-saved"


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


@pytest.fixture
def keyed_judge():
    """The OpenAI-compatible test server of test_judge, requiring JUDGE_KEY and scoring every completion 7."""
    server = JudgeServer(None, None)
    server.fixed_reply, server.api_key = "7", JUDGE_KEY
    yield server
    server.stop()


@pytest.mark.parametrize("command", ["train", "sft"])
def test_a_recipes_hub_token_and_judge_key_are_in_no_file_of_the_run_folder(tmp_path, keyed_judge, command,
                                                                            monkeypatch):
    # The run hands its token to huggingface_hub through HF_TOKEN; setenv first, so that the test's end restores it.
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.delenv("HF_TOKEN")
    if command == "train":  # scored by the judge, with the recipe's key
        recipe = secret_recipe(tmp_path, "tiny.yaml", per_device_train_batch_size=8, num_generations=4,
                               drift_num_orders=0, reward_funcs=["judge"], judge_base_url=keyed_judge.url,
                               judge_model=MODEL_NAME, judge_api_key=JUDGE_KEY, judge_timeout=30.0)
    else:
        recipe = secret_recipe(tmp_path, "tiny_sft.yaml", per_device_train_batch_size=8)
    out = tmp_path / "run"
    trainer = cli.main([command, recipe, "--output_dir", str(out)])
    # The run keeps its token where huggingface_hub reads it at every call (a push too), not in its arguments,
    # which Trainer pickles into the output folder again before each push.
    assert trainer.state.global_step == 1 and os.environ["HF_TOKEN"] == HUB_TOKEN and trainer.args.hub_token is None
    if command == "train":
        assert len(keyed_judge.requests) == 8  # every completion was scored by the judge, with the key
        assert {h["Authorization"] for h in keyed_judge.headers_seen} == {f"Bearer {JUDGE_KEY}"}
    for path in [out / "training_args.bin", out / "checkpoint-1" / "training_args.bin"]:
        args = torch.load(path, weights_only=False)  # still the run's arguments, less the token
        assert args.hub_token is None and args.max_steps == 1 and args.learning_rate == trainer.args.learning_rate
    assert files_holding(out, [HUB_TOKEN, JUDGE_KEY]) == {}

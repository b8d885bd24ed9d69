"""Bad input stops before work starts with an error that names the problem: datasets too small to train on, rewards
of the wrong shape, impossible sampler settings, recipe values of the wrong type, missing or truncated models."""

import os

import pytest

from dipod_trl import DiPODConfig, DiPODTrainer, cli
from dipod_trl.trainer import RewardFunctionError
from tests.conftest import FAST, TINY, count_sevens, make_tiny_model, make_trainer, prompts_dataset


@pytest.mark.parametrize("rows", [0, 1])
def test_a_dataset_smaller_than_one_generation_batch_is_refused(tokenizer, tmp_path, rows):
    # 8 completions per step in groups of 4: one generation batch needs 2 prompts.
    config = DiPODConfig(output_dir=str(tmp_path), max_completion_length=8, block_length=4, diffusion_steps=8,
                         num_generations=4, per_device_train_batch_size=8, report_to="none")
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with pytest.raises(ValueError, match=f"train_dataset has {rows} rows, but one generation batch needs 2"):
        DiPODTrainer(model, count_sevens, args=config, train_dataset=prompts_dataset(rows), processing_class=tokenizer)


def test_an_empty_dataset_from_a_recipe_is_refused_before_the_model_loads(tmp_path):
    missing_model = str(tmp_path / "no-model-here")  # would fail to load: the dataset check comes first
    with pytest.raises(ValueError, match="train_dataset has 0 rows"):
        cli.main(["train", TINY, "--output_dir", str(tmp_path / "out"), *FAST, "--model_name_or_path",
                  missing_model, "--num_train_examples", "0"])


def scalar_reward(completions, **kwargs):
    return 0.5


def string_rewards(completions, **kwargs):
    return ["1"] * len(completions)


def short_rewards(completions, **kwargs):
    return [1.0]


@pytest.mark.parametrize(
    "reward, match",
    [
        (scalar_reward, r"'scalar_reward' returned a float \(0.5\); it must return a list of 8 floats"),
        (string_rewards, r"'string_rewards' returned str values such as '1'"),
        (short_rewards, r"'short_rewards' returned a list of length 1"),
    ],
)
def test_a_reward_of_the_wrong_shape_or_type_names_the_function(tokenizer, tmp_path, reward, match):
    with pytest.raises(RewardFunctionError, match=match):
        make_trainer(tokenizer, tmp_path, reward=reward).train()


@pytest.mark.parametrize("block_length", [0, -4])
def test_block_length_must_be_positive(block_length):
    with pytest.raises(ValueError, match=f"block_length must be a positive number of tokens, got {block_length}"):
        DiPODConfig(output_dir="/tmp/unused", max_completion_length=8, block_length=block_length, diffusion_steps=8)


def test_a_recipe_value_of_the_wrong_shape_names_the_key(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: tiny\ntask: digit_sort\ndipod_beta: [0.1]\nnum_iterations: true\n")
    with pytest.raises(ValueError, match=r"'dipod_beta' in recipe .* must be float, got \[0.1\]; 'num_iterations' "
                                         r"in recipe .* must be int, got True"):
        cli.main(["train", str(recipe), "--output_dir", str(tmp_path / "out")])


def test_a_local_model_directory_that_does_not_exist_says_which_step_makes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("outputs")
    for name in ("outputs/tiny-sft", "./tiny-sft", str(tmp_path / "a" / "b")):
        with pytest.raises(FileNotFoundError, match=f"model '{name}': no such directory.*run that step first.*"
                                                    "dipod sft recipes/tiny_sft.yaml"):
            cli.main(["train", TINY, "--output_dir", "out", *FAST, "--model_name_or_path", name])


def test_a_truncated_safetensors_file_is_named(tokenizer, tmp_path):
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # as a crash during the save leaves it
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file .*cut short"):
        cli.main(["train", TINY, "--output_dir", str(tmp_path / "out"), *FAST, "--model_name_or_path",
                  str(tmp_path / "model")])

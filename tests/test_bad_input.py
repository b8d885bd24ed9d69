"""Bad input stops before work starts with an error that names the problem: datasets too small to train on, rewards
of the wrong shape, impossible sampler settings, recipe values of the wrong type, missing or truncated models."""

import json
import math
import os
import runpy
import sys
import warnings

import pytest
from datasets import Dataset, load_dataset

from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.commands import cli
from dipod_trl.evaluation import read_records
from dipod_trl.trainer import RewardFunctionError
from tests.helpers.models import make_tiny_model
from tests.helpers.processes import forkserver
from tests.helpers.trainers import FAST, TINY, count_sevens, make_trainer, prompts_dataset, text_hash, tiny_run_config


@pytest.mark.parametrize("rows", [0, 1])
def test_a_dataset_smaller_than_one_generation_batch_is_refused(tokenizer, tmp_path, rows):
    # 8 completions per step in groups of 4: one generation batch needs 2 prompts.
    config = tiny_run_config(tmp_path)
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


# ------------------------------------------------------------------ settings and prompts that train on nothing


def test_rl_at_temperature_zero_warns_and_every_group_is_identical(tokenizer, tmp_path):
    with pytest.warns(UserWarning, match=r"temperature=0 .* identical, so every group-relative advantage is 0 "
                                         r"\(frac_reward_zero_std = 1\) and only the DiPOD term trains"):
        trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, temperature=0.0, max_steps=1)
    trainer.train()
    assert trainer.state.log_history[0]["frac_reward_zero_std"] == 1.0
    with warnings.catch_warnings():  # random remasking orders still differ within a group
        warnings.simplefilter("error")
        DiPODConfig(output_dir=str(tmp_path), temperature=0.0, remasking="random")


def test_a_recipe_with_a_key_given_twice_names_the_key_and_its_lines(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: tiny\ntask: digit_sort\ndipod_beta: 0.1\nseed: 3\ndipod_beta: 0.0\n")
    with pytest.raises(ValueError, match=r"recipe.yaml: key 'dipod_beta' is given twice \(lines 3 and 5\)"):
        cli.main(["train", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")


def test_a_yaml_merge_key_in_a_recipe_merges_as_yaml_means(tmp_path):
    from dipod_trl.commands.recipe import load_recipe_file

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: &base\n  dipod_beta: 0.1\n  seed: 3\nrun:\n  <<: *base\n  seed: 4\n")
    assert load_recipe_file(str(recipe))["run"] == {"dipod_beta": 0.1, "seed": 4}


def test_chat_roles_a_template_does_not_know_are_named_in_a_warning(tokenizer, tmp_path):
    rows = [[{"role": "system", "content": "sort"}, {"role": "human" if i % 2 else "usr", "content": str(i)}]
            for i in range(16)]
    with pytest.warns(UserWarning) as record:
        make_trainer(tokenizer, tmp_path, dataset=Dataset.from_dict({"prompt": rows}))
    messages = sorted(str(w.message) for w in record if "role" in str(w.message))
    assert len(messages) == 2
    assert "role 'human' (first in row 1); chat templates expect system, user, assistant, tool" in messages[0]
    assert "role 'usr' (first in row 0)" in messages[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_trainer(tokenizer, tmp_path, dataset=prompts_dataset())  # system/user/assistant only: no warning


def test_a_prompt_column_mixing_plain_and_conversational_prompts_names_the_row(tokenizer, tmp_path):
    rows = [{"prompt": f"{i}{i}"} if i != 3 else {"prompt": [{"role": "user", "content": "33"}]} for i in range(16)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset("json", data_files=str(path), split="train")  # a Json column holds both kinds
    with pytest.raises(ValueError, match=r"train_dataset: column 'prompt' mixes plain-text and conversational "
                                         r"prompts: row 0 is plain text, row 3 is conversational"):
        make_trainer(tokenizer, tmp_path, dataset=dataset)


@pytest.mark.parametrize("conversational", [False, True])
def test_an_empty_prompt_first_in_a_batch_trains(tokenizer, tmp_path, conversational):
    texts = [""] + [f"{i}{(3 * i) % 10}" for i in range(1, 16)]
    prompts = [[{"role": "user", "content": t}] for t in texts] if conversational else texts
    trainer = make_trainer(tokenizer, tmp_path, dataset=Dataset.from_dict({"prompt": prompts}),
                           shuffle_dataset=False, max_steps=1)
    trainer.train()
    assert trainer.state.global_step == 1 and math.isfinite(trainer.state.log_history[0]["loss"])


def test_an_async_reward_function_that_raises_names_itself_and_the_sample(tokenizer, tmp_path):
    async def fragile(completions, answer, **kwargs):
        return [1.0 / int(a) for a in answer]  # answer "0" divides by zero

    trainer = make_trainer(tokenizer, tmp_path, reward=fragile)
    # The prompts whose answer is "0" are rows 0 ("000") and 10 ("1000"): the error shows one of them.
    with pytest.raises(RewardFunctionError, match=r"'fragile' raised ZeroDivisionError: float division by zero on "
                                                  r"sample \d+: prompt=\"\[\{'role': 'user', 'content': '1?000'\}\]"):
        trainer.train()


def test_an_eval_record_without_an_index_names_the_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"setup_key": "other", "question": "q"}) + "\n"  # another run's line: not read
                    + json.dumps({"setup_key": "k", "index": 0, "question": "a"}) + "\n"
                    + json.dumps({"setup_key": "k", "question": "b"}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}, line 3: a record of this run has index=None, not an example "
                                         r"number.*Delete that line"):
        read_records(str(path), "k")


# ------------------------------------------------------------------ as a user meets them: `python -m dipod_trl ...`


def _dipod_main(argv: list[str], cwd: str, stderr_path: str) -> None:
    """What `python -m dipod_trl ARGV` runs, in `cwd`, with its stderr in `stderr_path`."""
    os.chdir(cwd)
    with open(stderr_path, "w") as stderr:
        os.dup2(stderr.fileno(), 2)
    sys.argv = ["dipod_trl", *argv]
    runpy.run_module("dipod_trl", run_name="__main__", alter_sys=True)


@pytest.fixture(scope="module")
def dipod():
    """`dipod(cwd, *argv)`: run `python -m dipod_trl ARGV` in `cwd` as a new process (forked from one that has
    imported the package, so it starts at once) that must fail; returns the last line of its stderr, the error."""
    context = forkserver("tests.test_bad_input")

    def run(cwd, *argv):
        stderr_path = os.path.join(cwd, "stderr.txt")
        process = context.Process(target=_dipod_main, args=([str(a) for a in argv], str(cwd), stderr_path))
        process.start()
        process.join(300)
        with open(stderr_path) as f:
            lines = f.read().strip().splitlines()
        assert process.exitcode == 1, lines[-20:]
        return lines[-1]

    return run


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_output_dir_that_is_a_file_is_refused_naming_it(dipod, tmp_path, where):
    (tmp_path / "results").write_text("notes")
    output_dir = tmp_path / "results" if where == "file" else tmp_path / "results" / "run"
    error = dipod(tmp_path, TINY, *FAST, "--output_dir", output_dir)
    # was: FileExistsError: [Errno 17] File exists: '.../results'
    problem = "is a file" if where == "file" else f"lies under '{tmp_path / 'results'}', which is a file"
    assert error == (f"FileExistsError: output_dir '{output_dir}' {problem}, not a directory. Choose a directory for "
                     "the run (a new or empty folder), or move the file away.")
    assert (tmp_path / "results").read_text() == "notes"


@pytest.mark.parametrize("setting, message", [
    (["--num_generations", "0"], "num_generations must be at least 2, got 0: each completion's advantage compares it "
                                 "with the other completions of its prompt. Set e.g. --num_generations 8."),
    (["--max_completion_length", "0"], "max_completion_length (0) must be a positive multiple of block_length (4), "
                                       "e.g. --max_completion_length 4."),
])
def test_no_completions_or_no_tokens_per_prompt_is_refused_by_the_config(dipod, tmp_path, setting, message):
    # was: ZeroDivisionError: integer modulo by zero (TRL's config, then DiPOD's)
    assert dipod(tmp_path, TINY, *FAST, *setting, "--output_dir", tmp_path / "out") == f"ValueError: {message}"


@pytest.mark.parametrize("task", [None, "gsm8k"])
def test_an_empty_or_latin1_jsonl_is_refused_before_the_model_loads(dipod, tmp_path, task):
    recipe = tmp_path / "recipe.yaml"  # tiny.yaml on a file of rows, as the task's (gsm8k) or as prompts (no task)
    with open(TINY) as f:
        recipe.write_text(f.read().replace("task: digit_sort", f"task: {task}" if task else ""))
    missing_model = tmp_path / "no-model-here"  # would fail to load: the data check must come first
    run = [recipe, *FAST, "--model_name_or_path", missing_model, "--output_dir", tmp_path / "out"]
    (tmp_path / "empty.jsonl").write_text("\n")
    # was: StopIteration (from datasets' JSON reader)
    assert dipod(tmp_path, *run, "--dataset_source", "empty.jsonl") == (
        "ValueError: source: 'empty.jsonl' is empty (no rows to read): check the path, or the step that writes the "
        "file.")
    rows = [{"question": f"{name} {i}", "answer": str(i)} for i, name in enumerate(["one", "two", "café", "four"])]
    (tmp_path / "latin1.jsonl").write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                                             .encode("latin-1"))
    # was: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 ... inside trainer.train, after the model loaded
    assert dipod(tmp_path, *run, "--dataset_source", "latin1.jsonl") == (
        "ValueError: source: 'latin1.jsonl' is not UTF-8 text: line 3 holds the byte 0xe9, which UTF-8 does not "
        "allow there (the file is likely Latin-1 or Windows-1252). Convert it, e.g. `iconv -f latin1 -t utf-8 "
        "latin1.jsonl > utf8-latin1.jsonl`, and point dataset_source at the result.")


def test_generate_with_a_tokenizer_larger_than_the_models_vocabulary_names_both_sizes(dipod, tokenizer, tmp_path):
    model = make_tiny_model(64, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")  # 109 tokens: ids 64..108 have no embedding row
    # was: IndexError: index out of range in self (the embedding lookup, mid-generation)
    assert dipod(tmp_path, "generate", "--model", "model", "--prompt", "sort 3 1 2") == (
        f"ValueError: model 'model': its tokenizer has {len(tokenizer)} tokens but the model's embeddings have 64 "
        f"rows, so token ids 64 and above cannot be looked up. The tokenizer is not the one this model was trained "
        "with: put the model's own tokenizer files in the folder, or grow the embeddings "
        "(model.resize_token_embeddings(len(tokenizer)), then train) and save both together.")


def test_a_yaml_alias_that_nests_a_list_in_reward_funcs_is_refused_naming_the_item(dipod, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: tiny\ntask: digit_sort\n"
                      "reward_funcs: [&format [soft_format_reward, xml_count_reward], *format, exact_match_accuracy]\n")
    # was: TypeError: attribute name must be string, not 'list' (after the model loaded)
    assert dipod(tmp_path, recipe, "--output_dir", tmp_path / "out") == (
        f"ValueError: 'reward_funcs' in recipe {recipe} must be a list of str, but item 0 is a list, "
        "['soft_format_reward', 'xml_count_reward']. A YAML alias (*name) to a list inserts that list as one item, "
        "it does not splice its items in: write the items out, or anchor single items (`- &acc name` ... "
        "`- *acc`).")
    # An alias to a single name is that name, as YAML means.
    recipe.write_text("task: digit_sort\nreward_funcs: [&acc exact_match_accuracy, *acc]\nreward_weights: [1, 0.5]\n")
    (task_args, config) = cli.parse_recipe([cli.TaskArguments, DiPODConfig], [str(recipe), "--output_dir", "out"])
    assert task_args.reward_funcs == ["exact_match_accuracy"] * 2 and config.reward_weights == [1, 0.5]

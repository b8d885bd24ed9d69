"""Rewards named in a recipe (`reward_funcs`): by import path and by reward-model directory, as `trl grpo` takes them,
and a clear error for a name that resolves to nothing."""

from __future__ import annotations

import pytest

import reward_models
from dipod_trl.commands.reward_resolution import resolve_rewards, reward_function
from dipod_trl.commands.task_data import TaskArguments
from tests.helpers.models import direct_scores

REWARDS_FILE = '''
def length_reward(completions, **kwargs):
    return [float(len(c.split())) for c in completions]

not_a_function = 3
'''


@pytest.fixture
def rewards_package(tmp_path, monkeypatch):
    """A package `custom_scores` with a module `rules` holding `length_reward`, importable from tmp_path."""
    package = tmp_path / "custom_scores"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rules.py").write_text(REWARDS_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_a_reward_named_by_import_path_is_that_function(rewards_package):
    from custom_scores.rules import length_reward

    args = TaskArguments(task="gsm8k", reward_funcs=["custom_scores.rules:length_reward",
                                                     "custom_scores.rules.length_reward", "xml_count_reward"])
    funcs, weights = resolve_rewards(args, [1.0, 0.5, 0.25])
    assert funcs == [length_reward, length_reward, reward_models.xml_count_reward] and weights == [1.0, 0.5, 0.25]
    assert funcs[0](completions=["a b c", "d"]) == [3.0, 1.0]


def test_an_import_path_to_nothing_says_what_it_tried(rewards_package):
    with pytest.raises(ValueError, match="module 'custom_scores.rules' has no attribute 'missing'"):
        reward_function("custom_scores.rules:missing")
    with pytest.raises(ValueError, match="has a non-callable attribute 'not_a_function'"):
        reward_function("custom_scores.rules.not_a_function")
    with pytest.raises(ValueError) as error:
        reward_function("no_such_rewards.f")
    message = str(error.value)
    for tried in ("'no_such_rewards.f' resolves to nothing", "nor a function of reward_models",
                  "no module 'no_such_rewards'", "not a local reward-model directory nor a hub id"):
        assert tried in message
    with pytest.raises(ValueError, match=r"did you mean 'gsm8k_accuracy'\?"):
        reward_function("gsm8k_acuracy")


def test_a_reward_model_directory_scores_like_the_model_itself(tiny_reward_model_dir):
    args = TaskArguments(task="gsm8k", reward_funcs=[str(tiny_reward_model_dir)])
    (reward,), _ = resolve_rewards(args, None)
    assert isinstance(reward, reward_models.SequenceClassifierReward)
    prompts = ["the question ", "she sold ", "half as many "]
    completions = ["the answer is 72", "72 clips in april and may", "bad"]
    scores = reward(prompts=prompts, completions=completions)
    expected = direct_scores(tiny_reward_model_dir, [p + c for p, c in zip(prompts, completions)])
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 4) for s in scores)) == 3  # the random model does tell the texts apart


def test_a_directory_or_hub_id_that_is_no_reward_model_says_why(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub here: fail at once, not on timeouts
    with pytest.raises(ValueError, match="as a local directory it does not load with AutoModelForSequence"):
        reward_function(str(tmp_path))
    with pytest.raises(ValueError, match="'no-such-org/no-such-model' resolves to nothing.*as a hub id"):
        reward_function("no-such-org/no-such-model")

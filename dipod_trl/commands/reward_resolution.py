"""The reward functions a recipe names (`reward_funcs`), or its task's default mix.

Each name is resolved as `trl grpo` resolves its rewards, first match wins:

- `judge`: an LLM judge behind an OpenAI-compatible server (`judge_base_url`, `judge_model`);
- a function of `reward_models` (`gsm8k_accuracy`, `xml_count_reward`, ...);
- an import path, `package.module:function` or `package.module.function` (the working directory is on the import
  path, as for `trl grpo`);
- a sequence-classification reward model, by local directory or hub id (`org/name`), as TRL's `GRPOTrainer` loads a
  string; it scores through `reward_models.SequenceClassifierReward` (batched, one logit per completion).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from .task_data import TaskArguments


def resolve_rewards(task_args: TaskArguments, reward_weights, reward_nan_policy: str = "error"):
    """`(reward_funcs, reward_weights)`: the named functions, or the task's default mix.

    A judge reply without a score stops the run showing the reply, unless `reward_nan_policy` is 'skip' (then it is no
    reward, like a None from any other function)."""
    from ..tasks import get_task

    if task_args.reward_funcs:
        funcs = []
        for name in task_args.reward_funcs:
            if name == "judge":
                funcs.append(_judge(task_args, "default" if reward_nan_policy == "skip" else "raise"))
            else:
                funcs.append(reward_function(name))
        return funcs, reward_weights
    if task_args.task is not None:
        funcs, weights = get_task(task_args.task).rewards()
        return funcs, reward_weights if reward_weights is not None else weights
    raise ValueError("reward_funcs: name the reward functions when training on a dataset_source without a task.")


def _judge(task_args: TaskArguments, on_unparsable: str = "raise"):
    from reward_models import JudgeReward

    base_url = task_args.judge_base_url or os.environ.get("DIPOD_JUDGE_URL")
    if not base_url or not task_args.judge_model:
        raise ValueError("reward_funcs: the `judge` reward needs judge_base_url (or $DIPOD_JUDGE_URL) and judge_model.")
    api_key = task_args.judge_api_key or os.environ.get("DIPOD_JUDGE_API_KEY")  # None: JudgeReward reads OPENAI_API_KEY
    return JudgeReward(base_url, task_args.judge_model, on_unparsable=on_unparsable, api_key=api_key,
                       timeout=task_args.judge_timeout, max_reply_bytes=task_args.judge_max_reply_bytes)


def reward_function(name: str):
    """The reward `name` names: a function of `reward_models`, an imported function, or a reward model (see the
    module docstring). A name that resolves to nothing is a `ValueError` that says what was tried."""
    import reward_models

    if callable(getattr(reward_models, name, None)):
        return getattr(reward_models, name)
    close = difflib.get_close_matches(name, [n for n in reward_models.__all__ if n.islower()], n=1, cutoff=0.75)
    tried = [f"not 'judge' nor a function of reward_models{f' (did you mean {close[0]!r}?)' if close else ''}"]
    if _looks_like_import_path(name):
        function, why_not = _imported_function(name)
        if function is not None:
            return function
        tried.append(why_not)
    else:
        tried.append("not an import path (`package.module:function` or `package.module.function`)")
    if os.path.isdir(name) or _looks_like_hub_id(name):
        return _reward_model(name, tried)
    tried.append("not a local reward-model directory nor a hub id (`org/name`)")
    raise ValueError(f"reward_funcs: {name!r} resolves to nothing: " + "; ".join(tried) + ".")


def _looks_like_import_path(name: str) -> bool:
    module, _, function = name.partition(":") if ":" in name else name.rpartition(".")
    return bool(module and function) and "/" not in name and not os.path.isdir(name)


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and all(name.split("/")) and ":" not in name


def _imported_function(name: str):
    """`(function, None)` for an importable `module:function` / `module.function`, or `(None, why not)` when the module
    does not exist. A module that exists but lacks the function, or fails to import, is an error right away."""
    module_name, _, attribute = name.partition(":") if ":" in name else name.rpartition(".")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `trl grpo`: a rewards file next to the recipe's launch directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
            raise  # the module exists but one of its own imports is missing
        return None, f"no module {module_name!r} to import {attribute!r} from (sys.path has the working directory)"
    function = getattr(module, attribute, None)
    if not callable(function):
        found = "has no" if function is None else "has a non-callable"
        raise ValueError(f"reward_funcs: {name!r}: module {module_name!r} {found} attribute {attribute!r}; name a "
                         "function f(completions, **columns) -> list[float].")
    return function, None


def _reward_model(name: str, tried: list[str]):
    """A sequence-classification reward model from a local directory or the hub, as a reward function."""
    from reward_models import SequenceClassifierReward

    try:
        return SequenceClassifierReward(name)
    except (OSError, ValueError) as error:
        where = "local directory" if os.path.isdir(name) else "hub id"
        raise ValueError(f"reward_funcs: {name!r} resolves to nothing: " + "; ".join(tried) + f"; as a {where} it "
                         f"does not load with AutoModelForSequenceClassification ({error}).") from error

"""The reward functions a recipe names (`reward_funcs`), or its task's default mix."""

from __future__ import annotations

from .task_data import TaskArguments


def resolve_rewards(task_args: TaskArguments, reward_weights, reward_nan_policy: str = "error"):
    """`(reward_funcs, reward_weights)`: the named functions, or the task's default mix.

    A judge reply without a score stops the run showing the reply, unless `reward_nan_policy` is 'skip' (then it is no
    reward, like a None from any other function)."""
    import reward_models

    from .tasks import get_task

    if task_args.reward_funcs:
        funcs = []
        for name in task_args.reward_funcs:
            if name == "judge":
                funcs.append(_judge(task_args, "default" if reward_nan_policy == "skip" else "raise"))
            elif callable(getattr(reward_models, name, None)):
                funcs.append(getattr(reward_models, name))
            else:
                raise ValueError(f"reward_funcs: {name!r} is neither 'judge' nor a function of reward_models.")
        return funcs, reward_weights
    if task_args.task is not None:
        funcs, weights = get_task(task_args.task).rewards()
        return funcs, reward_weights if reward_weights is not None else weights
    raise ValueError("reward_funcs: name the reward functions when training on a dataset_source without a task.")


def _judge(task_args: TaskArguments, on_unparsable: str = "raise"):
    import os

    from reward_models import JudgeReward

    base_url = task_args.judge_base_url or os.environ.get("DIPOD_JUDGE_URL")
    if not base_url or not task_args.judge_model:
        raise ValueError("reward_funcs: the `judge` reward needs judge_base_url (or $DIPOD_JUDGE_URL) and judge_model.")
    return JudgeReward(base_url, task_args.judge_model, on_unparsable=on_unparsable)

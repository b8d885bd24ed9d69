"""Checks on what a user hands the trainer (datasets, reward functions, prompts), with errors that name the culprit:
the dataset, the reward function and the sample, the prompt."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from datasets import Dataset, IterableDataset


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned None/NaN where that is not allowed."""


def describe_sample(prompts, completions, index: int) -> str:
    prompt, completion = prompts[index], completions[index]
    return f"sample {index}: prompt={str(prompt)[-200:]!r}, completion={str(completion)[:200]!r}"


def check_train_dataset(dataset, args) -> None:
    """Refuse a training set with fewer prompts than one generation batch needs: TRL's sampler drops incomplete
    batches, so training would end at step 0 and save the starting model as its result."""
    if dataset is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        return
    needed = args.generation_batch_size // args.num_generations
    if len(dataset) < needed:
        raise ValueError(
            f"train_dataset has {len(dataset)} rows, but one generation batch needs {needed} distinct prompts "
            f"(generation_batch_size {args.generation_batch_size} / num_generations {args.num_generations}). Add "
            "rows, or lower per_device_train_batch_size (or gradient_accumulation_steps, steps_per_generation)."
        )


def check_reward_output(rewards, name: str, num_samples: int):
    """A reward function must return one number (or None) per sample; name it when it does not."""
    if isinstance(rewards, (torch.Tensor, np.ndarray)):
        rewards = rewards.tolist()
    if not isinstance(rewards, (list, tuple)) or len(rewards) != num_samples:
        kind = f"a {type(rewards).__name__}" + (f" of length {len(rewards)}" if hasattr(rewards, "__len__") else "")
        raise RewardFunctionError(
            f"reward function {name!r} returned {kind} ({str(rewards)[:100]}); it must return a list of "
            f"{num_samples} floats, one per completion."
        )
    bad = [r for r in rewards if r is not None and not isinstance(r, numbers.Real)]
    if bad:
        raise RewardFunctionError(
            f"reward function {name!r} returned {type(bad[0]).__name__} values such as {bad[0]!r}; it must return "
            "floats (or None for 'no reward')."
        )
    return rewards


def guard_reward_function(func, name: str):
    """Wrap a reward function so that an exception or a malformed result names the function (and the sample)."""

    def guarded(prompts, completions, **kwargs):
        try:
            rewards = func(prompts=prompts, completions=completions, **kwargs)
        except Exception as batch_error:
            per_sample = {k: v for k, v in kwargs.items() if isinstance(v, list) and len(v) == len(prompts)}
            shared = {k: v for k, v in kwargs.items() if k not in per_sample}
            for i in range(len(prompts)):
                try:
                    func(prompts=[prompts[i]], completions=[completions[i]],
                         **{k: [v[i]] for k, v in per_sample.items()}, **shared)
                except Exception as sample_error:
                    raise RewardFunctionError(
                        f"reward function {name!r} raised {type(sample_error).__name__}: {sample_error} on "
                        f"{describe_sample(prompts, completions, i)}"
                    ) from sample_error
            raise RewardFunctionError(
                f"reward function {name!r} raised {type(batch_error).__name__}: {batch_error} on a batch of "
                f"{len(prompts)} samples (no single sample fails alone)"
            ) from batch_error
        return check_reward_output(rewards, name, len(prompts))

    guarded.__name__ = name
    return guarded


def check_prompt_columns(**datasets) -> None:
    """Refuse datasets (or dicts of them) without a `prompt` column; the keyword names the argument."""
    for name, dataset in datasets.items():
        for ds in dataset.values() if isinstance(dataset, dict) else [dataset]:
            columns = getattr(ds, "column_names", None)
            if isinstance(ds, (Dataset, IterableDataset)) and columns is not None and "prompt" not in columns:
                raise ValueError(f"{name} has no 'prompt' column (columns: {columns}).")


def check_finite_rewards(rewards_per_func: torch.Tensor, names, prompts, completions, first_row: int,
                         nan_policy: str) -> None:
    """Refuse +-inf rewards, and None/NaN ones unless `nan_policy='skip'`, naming the function and the sample.

    `rewards_per_func` is (N, F) over the global batch; `prompts`/`completions` are this process's, from `first_row`.
    """
    bad = ~torch.isfinite(rewards_per_func)
    if nan_policy == "skip":
        bad &= ~torch.isnan(rewards_per_func)  # NaN (from None) is skipped; +-inf is still an error
    if bad.any():
        row, column = (int(i) for i in bad.nonzero()[0])
        local = row - first_row
        where = describe_sample(prompts, completions, local) if 0 <= local < len(prompts) else f"sample {row}"
        value = rewards_per_func[row, column].item()
        raise RewardFunctionError(
            f"reward function {names[column]!r} returned {'None/NaN' if value != value else value} for {where}. "
            "Return a finite float, or set reward_nan_policy='skip' to ignore None/NaN rewards."
        )


def truncate_prompts(prompt_ids: list[list[int]], prompts: list, limit: int | None, policy: str) -> tuple[list, int]:
    """Prompts longer than `limit` tokens: an error naming the first (`policy='error'`), or their last `limit` tokens
    (`'left'`). Returns the prompt ids and how many were truncated."""
    if limit is None:
        return prompt_ids, 0
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > limit]
    if too_long and policy == "error":
        i = too_long[0]
        raise ValueError(
            f"prompt {i} has {len(prompt_ids[i])} tokens, more than max_prompt_length={limit} "
            f"({len(too_long)} prompt(s) in this batch are too long): {str(prompts[i])[:200]!r}. Raise "
            "max_prompt_length, shorten the prompts, or set prompt_truncation='left'."
        )
    return [ids[-limit:] if len(ids) > limit else ids for ids in prompt_ids], len(too_long)

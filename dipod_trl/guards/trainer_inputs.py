"""Checks on what a user hands the trainer (datasets, reward functions, prompts), with errors that name the culprit:
the dataset, the reward function and the sample, the prompt."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from datasets import Dataset, IterableDataset, Value
from trl.trainer.utils import is_async_callable


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


def _one_sample_calls(prompts, completions, kwargs):
    """The arguments that call a reward function on each sample alone: `(index, kwargs)` pairs."""
    per_sample = {k: v for k, v in kwargs.items() if isinstance(v, list) and len(v) == len(prompts)}
    shared = {k: v for k, v in kwargs.items() if k not in per_sample}
    for i in range(len(prompts)):
        yield i, dict(prompts=[prompts[i]], completions=[completions[i]],
                      **{k: [v[i]] for k, v in per_sample.items()}, **shared)


def _raised(name: str, error: Exception, where: str) -> RewardFunctionError:
    return RewardFunctionError(f"reward function {name!r} raised {type(error).__name__}: {error} on {where}")


def _raise_if_service_failed(name: str, error: Exception) -> None:
    # The service behind the function failed, not a sample: asking again per sample would only wait out its
    # deadline once more for each one.
    if isinstance(error, ConnectionError):
        raise RewardFunctionError(f"reward function {name!r} raised {type(error).__name__}: {error}") from error


def guard_reward_function(func, name: str):
    """Wrap a reward function (sync or async) so that an exception or a malformed result names the function and the
    sample: after a batch fails, each sample is scored alone to find the first that fails by itself."""
    no_single = "a batch of {} samples (no single sample fails alone)"

    if is_async_callable(func):
        async def guarded(prompts, completions, **kwargs):
            try:
                rewards = await func(prompts=prompts, completions=completions, **kwargs)
            except Exception as batch_error:
                _raise_if_service_failed(name, batch_error)
                for i, one in _one_sample_calls(prompts, completions, kwargs):
                    try:
                        await func(**one)
                    except Exception as sample_error:
                        where = describe_sample(prompts, completions, i)
                        raise _raised(name, sample_error, where) from sample_error
                raise _raised(name, batch_error, no_single.format(len(prompts))) from batch_error
            return check_reward_output(rewards, name, len(prompts))
    else:
        def guarded(prompts, completions, **kwargs):
            try:
                rewards = func(prompts=prompts, completions=completions, **kwargs)
            except Exception as batch_error:
                _raise_if_service_failed(name, batch_error)
                for i, one in _one_sample_calls(prompts, completions, kwargs):
                    try:
                        func(**one)
                    except Exception as sample_error:
                        where = describe_sample(prompts, completions, i)
                        raise _raised(name, sample_error, where) from sample_error
                raise _raised(name, batch_error, no_single.format(len(prompts))) from batch_error
            return check_reward_output(rewards, name, len(prompts))

    guarded.__name__ = name
    return guarded


CHAT_ROLES = ("system", "user", "assistant", "tool")


def check_prompt_column(dataset, name: str) -> None:
    """Refuse a `prompt` column that mixes plain-text and conversational prompts (the chat template would be applied
    to some rows only), naming the first row of the other kind; warn about chat roles a chat template does not know
    (`human`, `usr`...), which it would render as written or drop."""
    if not isinstance(dataset, Dataset) or "prompt" not in dataset.column_names:
        return
    if isinstance(dataset.features["prompt"], Value):
        return  # an Arrow string column: plain text only
    first_kind, unknown = None, {}
    for row, prompt in enumerate(dataset["prompt"]):
        conversational = isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)
        if first_kind is None:
            first_kind = conversational
        elif conversational != first_kind:
            kinds = {True: "conversational (a list of messages)", False: "plain text"}
            raise ValueError(
                f"{name}: column 'prompt' mixes plain-text and conversational prompts: row 0 is {kinds[first_kind]}, "
                f"row {row} is {kinds[conversational]}: {str(prompt)[:200]!r}. Make every prompt one kind, e.g. "
                "[{'role': 'user', 'content': text}] for the plain ones."
            )
        for message in prompt if conversational else ():
            if message.get("role") not in CHAT_ROLES:
                unknown.setdefault(message.get("role"), row)
    for role, row in unknown.items():
        warnings.warn(
            f"{name}: column 'prompt' has messages with role {role!r} (first in row {row}); chat templates expect "
            f"{', '.join(CHAT_ROLES)} and render other roles as written, or not at all. Rename the role (e.g. "
            "'human' -> 'user').",
            stacklevel=3,
        )


def check_prompt_columns(**datasets) -> None:
    """Refuse datasets (or dicts of them) without a `prompt` column, or whose prompts mix plain text and chat
    ([`check_prompt_column`]); the keyword names the argument."""
    for name, dataset in datasets.items():
        for ds in dataset.values() if isinstance(dataset, dict) else [dataset]:
            columns = getattr(ds, "column_names", None)
            if isinstance(ds, (Dataset, IterableDataset)) and columns is not None and "prompt" not in columns:
                raise ValueError(f"{name} has no 'prompt' column (columns: {columns}).")
            check_prompt_column(ds, name)


def check_finite_rewards(rewards_per_func: torch.Tensor, names, prompts, completions, first_row: int,
                         nan_policy: str, *, step: int) -> None:
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
            f"step {step}: reward function {names[column]!r} returned {'None/NaN' if value != value else value} for "
            f"{where}. "
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

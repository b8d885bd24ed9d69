"""digit_sort, the offline demo's synthetic task: sort a string of digits ("sort: 31415" -> "11345").

Short enough for the built-in tiny model on a CPU, with a verifiable answer. Its prompts carry no system prompt and its
answers no tags. Columns: prompt, answer -> `reward_models.exact_match_accuracy`.
"""

from __future__ import annotations

import random

from datasets import Dataset

import reward_models

from .base import Task, check_prompt_options, make_conversational_prompt, split_of


def load(split: str = "train", num_examples: int = 2000, length: int = 5, seed: int = 0, *, source: str | None = None,
         prompt_style: str = "project", few_shot: int = 0) -> Dataset:
    """`num_examples` random digit strings of `length` digits, seeded; the "train" and "test" splits are disjoint (a
    digit string belongs to "test" when its hash falls in the first tenth, see `split_of`)."""
    if source is not None:
        raise ValueError("dataset_source: digit_sort is generated; it reads no source.")
    if prompt_style != "project":
        raise ValueError(f"prompt_style: digit_sort has only the 'project' layout, not {prompt_style!r}.")
    check_prompt_options("digit_sort", prompt_style, few_shot, 0)
    if split not in ("train", "test"):
        raise ValueError(f"split: digit_sort has the splits 'train' and 'test', not {split!r}.")
    if num_examples < 1 or length < 1:
        raise ValueError(f"num_examples and length must be positive, got {num_examples} and {length}.")
    rng = random.Random(f"digit_sort-{split}-{seed}")
    rows = []
    while len(rows) < num_examples:
        digits = "".join(rng.choice("0123456789") for _ in range(length))
        if split_of(digits) == split:
            prompt = make_conversational_prompt(f"sort: {digits}", None)
            rows.append({"prompt": prompt, "answer": "".join(sorted(digits))})
    return Dataset.from_list(rows)


TASK = Task(
    name="digit_sort",
    load=load,
    accuracy=reward_models.exact_match_accuracy,
    reward_mix=((reward_models.exact_match_accuracy, 1.0),),
    sft_completion=lambda row: row["answer"],
)

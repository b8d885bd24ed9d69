"""MATH-500: competition mathematics; the answer is a LaTeX expression.

Columns: prompt, question, answer (LaTeX) -> `reward_models.math500_accuracy`.
"""

from __future__ import annotations

from datasets import Dataset, Features

import reward_models
from reward_models import d1 as d1_scoring
from reward_models._text import last_boxed

from .base import D1_FORMAT_PROMPT, FORMAT_PROMPT, Task, check_prompt_options, d1_prompt, make_conversational_prompt
from .source import PROMPT, TEXT, column, load_source, to_task_columns

SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step, and write the final "
    "answer inside \\boxed{} in the answer block.\n\n" + FORMAT_PROMPT
)

# d1's instructions, verbatim (the stray quote of its evaluation prompt included).
D1_TRAIN_INSTRUCTIONS = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a "
    "\\boxed{}. "
)
D1_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a "
    "\\boxed{}.\nRespond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n"
    "\\boxed{...}\n</answer>\" \n"
)

FEATURES = Features({"prompt": PROMPT, "question": TEXT, "answer": TEXT})


def prompt(problem: str, prompt_style: str = "project") -> list[dict]:
    """The prompt of one problem in a layout (see `dipod_trl.tasks.base`)."""
    if prompt_style == "d1":
        return d1_prompt(f"{D1_FORMAT_PROMPT}\n\n{D1_TRAIN_INSTRUCTIONS}\n\n{problem}", prefill=False)
    if prompt_style == "d1_eval":
        return d1_prompt(D1_EVAL_PROMPT + "\n\n" + problem, prefill=True)
    return make_conversational_prompt(problem, SYSTEM_PROMPT)


def load(source: str | None = None, split: str = "test", prompt_style: str = "project", few_shot: int = 0) -> Dataset:
    """MATH-500 as prompt / question / answer. A source with only full `solution`s gets the last `\\boxed{}` as the
    answer."""
    check_prompt_options("math500", prompt_style, few_shot, 0)
    source = source or "HuggingFaceH4/MATH-500"
    data = load_source(source, split)
    problem = column(data, ("problem", "question"), source, "math500")
    has_answer = any(c.lower() == "answer" for c in data.column_names)
    answer = column(data, ("answer",) if has_answer else ("solution",), source, "math500")

    def build(row):
        reference = str(row[answer]) if has_answer else last_boxed(str(row[answer]))
        if not reference:
            raise ValueError(f"source: a {source!r} row has no final answer: {str(row[answer])[-80:]!r}.")
        return {"prompt": prompt(row[problem], prompt_style), "question": row[problem], "answer": reference}

    return to_task_columns(data, build, FEATURES)


TASK = Task(
    name="math500",
    load=load,
    accuracy=reward_models.math500_accuracy,
    reward_mix=((reward_models.math500_accuracy, 2.0), (reward_models.boxed_in_answer_reward, 1.0)),
    d1_accuracy=d1_scoring.math500_accuracy,
    d1_record=lambda row: (row["question"], row["answer"]),
)

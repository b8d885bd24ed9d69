"""GSM8K: grade-school word problems; the answer is a number.

Columns: prompt, question, answer (the bare final number, e.g. "1200") -> `reward_models.gsm8k_accuracy`.
"""

from __future__ import annotations

import re

from datasets import Dataset, Features

import reward_models
from reward_models import d1 as d1_scoring

from .base import D1_FORMAT_PROMPT, FORMAT_PROMPT, Task, check_prompt_options, d1_prompt, make_conversational_prompt
from .source import PROMPT, TEXT, column, load_source, to_task_columns

SYSTEM_PROMPT = FORMAT_PROMPT

# d1's evaluation instructions (d1 `eval/gsm8k.py`), verbatim: the published tables were generated with them.
D1_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a "
    "\\boxed{}. \nRespond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n"
    "\\boxed{...}\n</answer>"
)

FEATURES = Features({"prompt": PROMPT, "question": TEXT, "answer": TEXT})


def prompt(question: str, prompt_style: str = "project") -> list[dict]:
    """The prompt of one question in a layout (see `dipod_trl.tasks.base`)."""
    if prompt_style == "d1":
        return d1_prompt(D1_FORMAT_PROMPT + "\n\n" + question, prefill=False)
    if prompt_style == "d1_eval":
        return d1_prompt(D1_EVAL_PROMPT + "\n\n" + question, prefill=True)
    return make_conversational_prompt(question, SYSTEM_PROMPT)


def final_answer(answer) -> str:
    """The bare final number of a GSM8K answer ("... #### 1,200" -> "1200"); a bare number passes through."""
    text = str(answer)
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    found = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not found:
        raise ValueError(f"answer: no final number in the GSM8K answer {text[-80:]!r}.")
    return found[-1].replace(",", "")


def load(source: str | None = None, split: str = "train", config: str | None = "main", prompt_style: str = "project",
         few_shot: int = 0) -> Dataset:
    """GSM8K as prompt / question / answer, `answer` being the bare final number the reward compares against."""
    check_prompt_options("gsm8k", prompt_style, few_shot, 0)
    source = source or "openai/gsm8k"
    data = load_source(source, split, config)
    question = column(data, ("question",), source, "gsm8k")
    answer = column(data, ("answer",), source, "gsm8k")
    return to_task_columns(
        data,
        lambda row: {"prompt": prompt(row[question], prompt_style), "question": row[question],
                     "answer": final_answer(row[answer])},
        FEATURES,
    )


TASK = Task(
    name="gsm8k",
    load=load,
    accuracy=reward_models.gsm8k_accuracy,
    # d1's mix in this package's 0-to-1 units: correctness pays 2.0, each format reward at most 0.5.
    reward_mix=(
        (reward_models.xml_count_reward, 0.5),
        (reward_models.soft_format_reward, 0.5),
        (reward_models.strict_format_reward, 0.5),
        (reward_models.integer_answer_reward, 0.5),
        (reward_models.gsm8k_accuracy, 2.0),
    ),
    d1_accuracy=d1_scoring.gsm8k_accuracy,
    sft_completion=None,
    d1_record=lambda row: (row["question"], d1_scoring.gsm8k_d1_reference(row["answer"])),
)

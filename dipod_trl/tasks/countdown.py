"""Countdown: reach a target with arithmetic over given numbers, each used once.

Columns: prompt, numbers (list of int), target (int) -> `reward_models.countdown_accuracy`.
"""

from __future__ import annotations

from datasets import Dataset, Features, List, Value

import reward_models
from reward_models import d1 as d1_scoring

from .base import D1_FORMAT_PROMPT, FORMAT_PROMPT, Task, check_prompt_options, d1_prompt, make_conversational_prompt
from .source import PROMPT, column, int_list, integer, load_source, to_task_columns

SYSTEM_PROMPT = FORMAT_PROMPT

# d1's evaluation instructions (d1 `eval/countdown.py`), verbatim: the published tables were generated with them.
D1_EVAL_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the provided target "
    "number. You may use the operations +, -, *, and / as needed, but each number must be used exactly once. Think "
    "step-by-step. After reasoning, provide only your final expression inside \\boxed{} tags without including an "
    "equals sign or the target number. For example: \\boxed{a + b * c}Respond in the following format:\n"
    "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)

FEATURES = Features({"prompt": PROMPT, "numbers": List(Value("int64")), "target": Value("int64")})


def question(numbers: list[int], target: int) -> str:
    """The project's instruction for one puzzle (d1's task statement, reworded)."""
    return (
        f"Using the numbers {list(numbers)}, write an arithmetic expression that equals {target}. Use every number "
        "exactly once; you may use +, -, * and / and parentheses. After your reasoning, give only the expression in "
        "the answer block, without an equals sign or the result. For example, for the numbers [2, 3, 4] and the "
        "target 5, a valid answer is:\n<answer>\n2*4-3\n</answer>"
    )


def d1_question(numbers: list[int], target: int) -> str:
    """The question as d1's evaluation writes it (and its parser reads it back)."""
    return f"Numbers: {list(numbers)}\nTarget: {target}"


def prompt(numbers: list[int], target: int, prompt_style: str = "project") -> list[dict]:
    """The prompt of one puzzle in a layout (see `dipod_trl.tasks.base`)."""
    if prompt_style == "d1":
        return d1_prompt(
            f"{D1_FORMAT_PROMPT}\nUsing only the numbers {list(numbers)}, create an arithmetic expression that "
            f"evaluates to exactly {target}. You must use all numbers from the list, and each number must be used "
            "exactly once. You may use the operations +, -, *, and / as needed. After reasoning, provide only your "
            "final expression inside <answer></answer> tags without including an equals sign or the target number. "
            "For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: <answer>\n2*4-3\n"
            "</answer>",
            prefill=False,
        )
    if prompt_style == "d1_eval":
        return d1_prompt(D1_EVAL_PROMPT + "\n\n" + d1_question(numbers, target), prefill=True)
    return make_conversational_prompt(question(numbers, target), SYSTEM_PROMPT)


def load(source: str | None = None, split: str = "train", num_numbers: int | None = None,
         prompt_style: str = "project", few_shot: int = 0) -> Dataset:
    """Countdown as prompt / numbers / target. `num_numbers=3` keeps the 3-number puzzles, as d1 trains on."""
    check_prompt_options("countdown", prompt_style, few_shot, 0)
    source = source or "Jiayi-Pan/Countdown-Tasks-3to4"
    data = load_source(source, split)
    # d1's test file (countdown_cd3_test.jsonl) names them input ("30,100,93") and output ("23").
    nums = column(data, ("nums", "numbers", "input"), source, "countdown")
    target = column(data, ("target", "output"), source, "countdown")
    data = data.map(lambda row: {"__numbers": int_list(row[nums], source), "__target": integer(row[target], source)})
    if num_numbers is not None:
        data = data.filter(lambda row: len(row["__numbers"]) == num_numbers)
    return to_task_columns(
        data,
        lambda row: {"prompt": prompt(row["__numbers"], row["__target"], prompt_style), "numbers": row["__numbers"],
                     "target": row["__target"]},
        FEATURES,
    )


TASK = Task(
    name="countdown",
    load=load,
    accuracy=reward_models.countdown_accuracy,
    # d1 pays 1.0 for a correct expression and 0.1 for a well-formed wrong one: 0.9 * accuracy + 0.1 * tag.
    reward_mix=((reward_models.countdown_accuracy, 0.9), (reward_models.answer_tag_reward, 0.1)),
    d1_accuracy=d1_scoring.countdown_accuracy,
    d1_record=lambda row: (d1_question(row["numbers"], row["target"]), [list(row["numbers"]), row["target"]]),
)

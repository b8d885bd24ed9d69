"""What a task is (`Task`), and the prompt layouts every task offers.

Prompt layouts (`prompt_style`):

* `project`: a system message with the answer format and the task's instructions, then the question as the user
  message.
* `d1`: d1's training prompts (d1's `diffu-grpo/data_utils.py`): no system message; the format instructions, a blank
  line and the question in one user message.
* `d1_eval`: d1's evaluation prompts (d1's `eval/<task>.py`): the task's evaluation instructions, a blank line and the
  question in one user message, and the assistant turn opened with `<reasoning>` (d1 prefills it for every model).
  The opened turn is a final assistant message, which the chat template continues (TRL does the same).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

PROMPT_STYLES = ("project", "d1", "d1_eval")
D1_PREFILL = "<reasoning>"

# The answer format every reasoning task asks for, in the project's words (a system message) and in d1's training
# prompts (the head of the user message, newlines as d1 writes them).
FORMAT_PROMPT = """Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>"""

D1_FORMAT_PROMPT = "\n" + FORMAT_PROMPT + "\n"


@dataclass(frozen=True)
class Task:
    """One task: how to load it, how to reward it in training, how to score it in evaluation, how to write its SFT
    target.

    `load(source=None, split=..., prompt_style="project", few_shot=0, **options)` returns a `Dataset` with a `prompt`
    column and exactly the columns `accuracy` (and every reward in `reward_mix`) reads.
    """

    name: str
    load: Callable
    accuracy: Callable  # the project's scoring, a reward in [0, 1] per completion
    reward_mix: tuple  # ((reward function, weight), ...): the training default
    d1_accuracy: Callable | None = None  # d1's scoring (`reward_models.d1`), None where d1 has no such task
    sft_completion: Callable[[dict], str] | None = None  # the target completion of a row, for SFT without one
    d1_record: Callable[[dict], tuple] | None = None  # a row's (question, ground truth) as d1's JSON files hold them
    d1_weight: Callable[[dict], float] | None = None  # a row's weight in d1's summary (Sudoku: its empty cells)
    max_few_shot: int = 0  # how many worked examples the task can put before the question

    def rewards(self) -> tuple[list, list[float]]:
        """`(reward_funcs, reward_weights)` of the training mix, for TRL's `reward_funcs` / `reward_weights`."""
        funcs, weights = zip(*self.reward_mix)
        return list(funcs), list(weights)


def check_prompt_options(task: str, prompt_style: str, few_shot: int, max_few_shot: int) -> None:
    """Refuse an unknown layout or more worked examples than the task has."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style: expected one of {PROMPT_STYLES}, got {prompt_style!r}.")
    if not 0 <= few_shot <= max_few_shot:
        raise ValueError(
            f"few_shot: {task} has {max_few_shot} worked examples, so few_shot must be between 0 and {max_few_shot}; "
            f"got {few_shot}."
        )


def make_conversational_prompt(question: str, system_prompt: str | None = FORMAT_PROMPT) -> list[dict]:
    """TRL's conversational prompt: a system message (unless `system_prompt` is None) and the user's question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*messages, {"role": "user", "content": question}]


def d1_prompt(user_content: str, prefill: bool) -> list[dict]:
    """d1's layout: everything in one user message; `prefill` opens the assistant turn with `<reasoning>`."""
    messages = [{"role": "user", "content": user_content}]
    return [*messages, {"role": "assistant", "content": D1_PREFILL}] if prefill else messages


def tokenize_prompt(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt: a conversational one through the chat template (with the generation prompt, or
    continuing a final assistant message), plain text as it is (no special tokens added)."""
    if isinstance(prompt, list):
        prefilled = prompt[-1]["role"] == "assistant"
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=not prefilled,
                                             continue_final_message=prefilled, tokenize=True,
                                             return_dict=True)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]



def split_of(key: str, test_fraction: float = 0.1) -> str:
    """"test" for a stable `test_fraction` of all keys (by a hash of the key, e.g. a puzzle string), else "train"."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return "test" if bucket < test_fraction else "train"

"""The tasks, one module each, found through one registry.

A task module holds everything about its task: the prompt (in the project's layout and in d1's, with few-shot examples
where the task has them), the loader, the training reward mix, the evaluation scoring (the project's, and d1's for
comparing with published tables), the SFT target and how d1's evaluation files write a row. `TASKS` maps each name to
its `Task`; adding a task is one new module and one line here.

    from dipod_trl.tasks import get_task, load_task
    task = get_task("gsm8k")
    data = load_task("gsm8k", split="test", prompt_style="d1_eval")
    funcs, weights = task.rewards()
"""

from __future__ import annotations

from datasets import Dataset

from . import countdown, digit_sort, gsm8k, math500, sudoku
from .base import PROMPT_STYLES, Task, make_conversational_prompt, split_of, tokenize_prompt
from .source import load_source

TASKS: dict[str, Task] = {t.name: t for t in (gsm8k.TASK, math500.TASK, countdown.TASK, sudoku.TASK, digit_sort.TASK)}

__all__ = ["PROMPT_STYLES", "TASKS", "Task", "get_task", "load_source", "load_task", "make_conversational_prompt",
           "split_of", "tokenize_prompt"]


def get_task(name: str) -> Task:
    """The `Task` registered as `name`."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {sorted(TASKS)}.")
    return TASKS[name]


def load_task(task: str, source: str | None = None, split: str | None = None, **kwargs) -> Dataset:
    """Load a task by name; a `source` or `split` of None keeps the loader's default. Other keywords (`prompt_style`,
    `few_shot`, loader options) go to the task's loader."""
    if source is not None:
        kwargs["source"] = source
    if split is not None:
        kwargs["split"] = split
    return get_task(task).load(**kwargs)

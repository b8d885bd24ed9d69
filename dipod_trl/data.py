"""Former home of the task loaders, kept so existing imports work: everything now lives in `dipod_trl.tasks`, one
module per task (prompts, loader, rewards, scoring)."""

from __future__ import annotations

from .tasks import TASKS as _TASKS
from .tasks import countdown as _countdown
from .tasks import digit_sort as _digit_sort
from .tasks import gsm8k as _gsm8k
from .tasks import load_source, load_task, make_conversational_prompt, split_of, tokenize_prompt
from .tasks import math500 as _math500
from .tasks import sudoku as _sudoku
from .tasks.base import FORMAT_PROMPT as SYSTEM_PROMPT

load_gsm8k = _gsm8k.load
load_math500 = _math500.load
load_countdown = _countdown.load
load_sudoku = _sudoku.load
load_digit_sort = _digit_sort.load
gsm8k_final_answer = _gsm8k.final_answer
countdown_question = _countdown.question
sudoku_question = _sudoku.question
sudoku_split_of = split_of
count_sudoku_solutions = _sudoku.count_solutions
generate_sudoku_puzzle = _sudoku.generate_puzzle
generate_sudoku_puzzles = _sudoku.generate_puzzles
MATH_SYSTEM_PROMPT = _math500.SYSTEM_PROMPT
COUNTDOWN_SYSTEM_PROMPT = _countdown.SYSTEM_PROMPT
SUDOKU_SYSTEM_PROMPT = _sudoku.SYSTEM_PROMPT
SYSTEM_PROMPTS = {name: module.SYSTEM_PROMPT for name, module in
                  (("gsm8k", _gsm8k), ("math500", _math500), ("countdown", _countdown), ("sudoku", _sudoku))}
TASKS = {name: task.load for name, task in _TASKS.items()}

__all__ = ["COUNTDOWN_SYSTEM_PROMPT", "MATH_SYSTEM_PROMPT", "SUDOKU_SYSTEM_PROMPT", "SYSTEM_PROMPT", "SYSTEM_PROMPTS",
           "TASKS", "count_sudoku_solutions", "countdown_question", "generate_sudoku_puzzle", "generate_sudoku_puzzles",
           "gsm8k_final_answer", "load_countdown", "load_digit_sort", "load_gsm8k", "load_math500", "load_source",
           "load_sudoku", "load_task", "make_conversational_prompt", "sudoku_question", "sudoku_split_of",
           "tokenize_prompt"]

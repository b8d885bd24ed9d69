"""4x4 Sudoku: fill a grid so each row, column and 2x2 box holds 1-4 once; no download, puzzles are generated here.

Columns: prompt, puzzle, solution (16-digit strings, 0 = empty) -> `reward_models.sudoku_accuracy`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from datasets import Dataset, Features

import reward_models
from reward_models import d1 as d1_scoring

from .base import Task, check_prompt_options, d1_prompt, make_conversational_prompt, split_of
from .source import PROMPT, TEXT, column, load_source, to_task_columns

SYSTEM_PROMPT = """Solve the 4x4 Sudoku puzzle you are given. The puzzle is a 16-digit string that lists the \
grid row by row, left to right and top to bottom; 0 marks an empty cell.

Rules:
- Fill every empty cell with a digit from 1 to 4.
- Each row, each column and each of the four 2x2 boxes must contain 1, 2, 3 and 4 exactly once.
- Keep the given digits unchanged.

Respond in the following format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
The solved grid as a 16-digit string, with no spaces or separators
</answer>"""

# d1's instructions (d1 `eval/sudoku.py` and `diffu-grpo/data_utils.py`, the same text), verbatim.
D1_PROMPT = (
    "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading "
    "left-to-right, top-to-bottom, where '0' represents empty cells.\n\nRules:\n- Fill empty cells with digits 1-4\n"
    "- Each row must contain digits 1-4 exactly once\n- Each column must contain digits 1-4 exactly once\n"
    "- Each 2x2 box must contain digits 1-4 exactly once\n\nImportant: Your solution must be a COMPLETE "
    "16-character string with only the digits 1-4, representing your final solved grid.\n\nRespond in this exact "
    "format:\n<reasoning>\nYour step-by-step solving process\n</reasoning>\n<answer>\n[16-character solution string "
    "with no spaces or separators]\n</answer>\n"
)

# The three worked examples of SPG's few-shot Sudoku runs (SPG `spg/data_utils.py`, `eval/sudoku.py`), verbatim.
FEW_SHOT_EXAMPLES = (
    "Question:\nSolve the following Sudoku puzzle: 3014002020004130\nAnswer:\n<reasoning>\nInterpret puzzle as 4 "
    "rows of 4:\nR1: 3 0 1 4\nR2: 0 0 2 0\nR3: 2 0 0 0\nR4: 4 1 3 0\n\nFill easy singles:\nR1 missing 2 \u2192 "
    "R1C2=2.\nR4 missing 2 \u2192 R4C4=2.\nBox D (R3-4,C3-4) then needs {1,4}; column4 can only accept 1 \u2192 "
    "R3C4=1, R3C3=4.\nR3 now missing 3 \u2192 R3C2=3.\nColumn1 missing 1 \u2192 R2C1=1.\nColumn2 missing 4 "
    "\u2192 R2C2=4.\nLast cell R2C4=3.\n\nFinal grid:\nR1: 3 2 1 4\nR2: 1 4 2 3\nR3: 2 3 4 1\nR4: 4 1 3 2\n"
    "</reasoning>\n<answer>\n3214142323414132\n</answer>",
    "Question:\nSolve the following Sudoku puzzle: 0000100420013142\nAnswer:\n<reasoning>\nInterpret puzzle as 4 "
    "rows of 4:\nR1: 0 0 0 0\nR2: 1 0 0 4\nR3: 2 0 0 1\nR4: 3 1 4 2\n\nFill easy singles:\nCol1 missing 4 "
    "\u2192 R1C1=4.\nCol4 missing 3 \u2192 R1C4=3.\nBox A (R1-2,C1-2) missing {2,3} and R1 now needs {1,2} "
    "\u2192 R1C2=2, R2C2=3.\nR1C3=1.\nR2 now missing 2 \u2192 R2C3=2.\nCol2 missing 4 \u2192 R3C2=4, then "
    "R3C3=3.\n\nFinal grid:\nR1: 4 2 1 3\nR2: 1 3 2 4\nR3: 2 4 3 1\nR4: 3 1 4 2\n</reasoning>\n<answer>\n"
    "4213132424313142\n</answer>",
    "Question:\nSolve the following Sudoku puzzle: 2001403002001420\nAnswer:\n<reasoning>\nInterpret puzzle as 4 "
    "rows of 4:\nR1: 2 0 0 1\nR2: 4 0 3 0\nR3: 0 2 0 0\nR4: 1 4 2 0\n\nFill easy singles:\nR1 missing {3,4}; Col2 "
    "can't be 1 so R1C2=3 \u2192 R1C3=4.\nR4 missing 3 \u2192 R4C4=3.\nCol4 missing {2,4}; R2 must take 2 \u2192 "
    "R2C4=2 \u2192 R2C2=1.\nCol1 missing 3 \u2192 R3C1=3.\nCol3 missing 1 \u2192 R3C3=1 \u2192 R3C4=4.\n\n"
    "Final grid:\nR1: 2 3 4 1\nR2: 4 1 3 2\nR3: 3 2 1 4\nR4: 1 4 2 3\n</reasoning>\n<answer>\n2341413232141423\n"
    "</answer>",
)

FEATURES = Features({"prompt": PROMPT, "puzzle": TEXT, "solution": TEXT})


def question(puzzle: str) -> str:
    """The user's question for one puzzle."""
    return f"Solve the following Sudoku puzzle: {puzzle}"


def prompt(puzzle: str, prompt_style: str = "project", few_shot: int = 0) -> list[dict]:
    """The prompt of one puzzle in a layout (see `dipod_trl.tasks.base`), after `few_shot` worked examples.

    With examples the question is written as they are ("Question: ...\nAnswer:\n"), as SPG's few-shot runs do:
    its training prompts (`d1`) and its evaluation prompts (`d1_eval`, whose question keeps d1's trailing newline).
    """
    examples = "\n\n".join(FEW_SHOT_EXAMPLES[:few_shot])
    if prompt_style == "project":
        body = f"{examples}\n\nQuestion: {question(puzzle)}\nAnswer:\n" if few_shot else question(puzzle)
        return make_conversational_prompt(body, SYSTEM_PROMPT)
    if prompt_style == "d1":
        if few_shot:
            return d1_prompt(f"{D1_PROMPT}\n\n{examples}\n\nQuestion: {question(puzzle)}\nAnswer:\n", prefill=False)
        return d1_prompt(f"{D1_PROMPT}\n\n{question(puzzle)}\n", prefill=False)
    body = f"{examples}\n\nQuestion: {question(puzzle)}\n\nAnswer:\n" if few_shot else f"{question(puzzle)}\n"
    return d1_prompt(f"{D1_PROMPT}\n\n{body}", prefill=True)


def load(
    source: str | None = None,
    split: str = "train",
    num_puzzles: int = 1000,
    seed: int = 0,
    min_clues: int | tuple[int, int] = 4,
    prompt_style: str = "project",
    few_shot: int = 0,
) -> Dataset:
    """4x4 Sudoku as prompt / puzzle / solution: generated (source None) or read from a file with those columns.

    Generated splits are disjoint: a puzzle belongs to "test" when `split_of` says so, and to "train" otherwise, so
    `load(split="test")` never repeats a training puzzle, whatever the seeds. `min_clues` (an int or a `(low, high)`
    range) sets how few clues the puzzles keep: see `generate_puzzles`.
    """
    check_prompt_options("sudoku", prompt_style, few_shot, len(FEW_SHOT_EXAMPLES))
    if source is None:
        if split not in ("train", "test"):
            raise ValueError(f"split: generated Sudoku has the splits 'train' and 'test', not {split!r}.")
        pairs = generate_puzzles(num_puzzles, seed=seed, min_clues=min_clues, accept=lambda p: split_of(p) == split)
        data = Dataset.from_dict({"puzzle": [p for p, _ in pairs], "solution": [s for _, s in pairs]})
        puzzle, solution = "puzzle", "solution"
    else:
        data = load_source(source, split)
        puzzle = column(data, ("puzzle",), source, "sudoku")
        solution = column(data, ("solution",), source, "sudoku")
    return to_task_columns(
        data,
        lambda row: {"prompt": prompt(_grid(row[puzzle], "puzzle"), prompt_style, few_shot),
                     "puzzle": _grid(row[puzzle], "puzzle"), "solution": _grid(row[solution], "solution")},
        FEATURES,
    )


def _grid(value, name: str) -> str:
    """A 16-digit grid string; an int (a CSV/JSON that dropped leading zeros) is zero-padded back."""
    grid = str(value).strip().zfill(16) if isinstance(value, int) else str(value).strip()
    if len(grid) != 16 or not grid.isdigit():
        raise ValueError(f"{name}: expected a 16-digit string (0 = empty), got {value!r}.")
    return grid


def sft_completion(row: dict) -> str:
    """The solution in the answer format, with an empty reasoning block."""
    return f"<reasoning>\n</reasoning>\n<answer>\n{row['solution']}\n</answer>"


TASK = Task(
    name="sudoku",
    load=load,
    accuracy=reward_models.sudoku_accuracy,
    reward_mix=((reward_models.sudoku_accuracy, 1.0),),
    d1_accuracy=d1_scoring.sudoku_accuracy,
    sft_completion=sft_completion,
    d1_record=lambda row: (question(row["puzzle"]) + "\n", row["solution"]),
    d1_weight=lambda row: row["puzzle"].count("0"),  # d1 reports correct cells over empty cells, summed
    max_few_shot=len(FEW_SHOT_EXAMPLES),
)


# ---------------------------------------------------------------------------------------------------------------------
# 4x4 Sudoku generator
# ---------------------------------------------------------------------------------------------------------------------

_SIZE, _BOX = 4, 2


def _peer_cells() -> list[list[int]]:
    """For each cell, the other cells that share its row, column or box (computed once)."""
    peers = []
    for cell in range(_SIZE * _SIZE):
        row, col = divmod(cell, _SIZE)
        box = (row // _BOX, col // _BOX)
        peers.append(
            [
                other
                for other in range(_SIZE * _SIZE)
                if other != cell
                and (
                    other // _SIZE == row
                    or other % _SIZE == col
                    or (other // _SIZE // _BOX, other % _SIZE // _BOX) == box
                )
            ]
        )
    return peers


_PEERS = _peer_cells()


def _candidates(grid: list[int], cell: int) -> list[int]:
    """Digits that cell can take without repeating one in its row, column or box."""
    used = {grid[other] for other in _PEERS[cell]}
    return [d for d in range(1, _SIZE + 1) if d not in used]


def count_solutions(grid: list[int], limit: int = 2) -> int:
    """Number of completions of `grid` (0 = empty), counting no further than `limit` (2 is enough for uniqueness).

    Backtracking over the most constrained empty cell first; `grid` is restored before returning.
    """
    empty = [i for i, v in enumerate(grid) if v == 0]
    if not empty:
        return 1
    cell = min(empty, key=lambda i: len(_candidates(grid, i)))
    count = 0
    for digit in _candidates(grid, cell):
        grid[cell] = digit
        count += count_solutions(grid, limit - count)
        grid[cell] = 0
        if count >= limit:
            break
    return count


def _random_solution(rng: random.Random) -> list[int]:
    """A uniformly shuffled search for a full valid grid (digits tried in random order at each cell)."""
    grid = [0] * (_SIZE * _SIZE)

    def fill(cell: int) -> bool:
        if cell == len(grid):
            return True
        digits = _candidates(grid, cell)
        rng.shuffle(digits)
        for digit in digits:
            grid[cell] = digit
            if fill(cell + 1):
                return True
        grid[cell] = 0
        return False

    fill(0)
    return grid


def generate_puzzle(rng: random.Random, min_clues: int = 4) -> tuple[str, str]:
    """One `(puzzle, solution)` pair whose puzzle has exactly one solution.

    Start from a random full grid and try removing each clue in random order, keeping a removal only while the
    puzzle stays uniquely solvable and at least `min_clues` clues remain (4 is the fewest a unique 4x4 puzzle has).
    """
    if not 4 <= min_clues <= _SIZE * _SIZE:
        raise ValueError(f"min_clues must be between 4 and {_SIZE * _SIZE}, got {min_clues}.")
    solution = _random_solution(rng)
    puzzle = list(solution)
    cells = list(range(len(puzzle)))
    rng.shuffle(cells)
    for cell in cells:
        if sum(v != 0 for v in puzzle) <= min_clues:
            break
        digit, puzzle[cell] = puzzle[cell], 0
        if count_solutions(puzzle) != 1:
            puzzle[cell] = digit
    return "".join(map(str, puzzle)), "".join(map(str, solution))


def generate_puzzles(
    num_puzzles: int,
    seed: int = 0,
    min_clues: int | tuple[int, int] = 4,
    accept: Callable[[str], bool] | None = None,
    max_attempts: int | None = None,
) -> list[tuple[str, str]]:
    """`num_puzzles` distinct unique-solution puzzles, deterministic for a seed; `accept` filters puzzles.

    `min_clues` is the clue floor of `generate_puzzle`; a `(low, high)` pair draws the floor per puzzle, for
    a mix of easy (many clues) and hard (few clues) puzzles. Raises a `ValueError` if `max_attempts` draws (default
    200 per puzzle) do not yield enough distinct puzzles.
    """
    if num_puzzles < 0:
        raise ValueError(f"num_puzzles must be 0 or more, got {num_puzzles}.")
    rng = random.Random(seed)
    max_attempts = max_attempts if max_attempts is not None else 200 * max(num_puzzles, 1)
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for _ in range(max_attempts):
        if len(pairs) == num_puzzles:
            break
        floor = rng.randint(*min_clues) if isinstance(min_clues, (tuple, list)) else min_clues
        puzzle, solution = generate_puzzle(rng, floor)
        if puzzle not in seen and (accept is None or accept(puzzle)):
            seen.add(puzzle)
            pairs.append((puzzle, solution))
    if len(pairs) < num_puzzles:
        raise ValueError(
            f"num_puzzles: only {len(pairs)} distinct puzzles found in {max_attempts} draws; ask for fewer, or allow "
            "more clues (min_clues) so that more distinct puzzles exist."
        )
    return pairs

"""Sudoku rewards (4x4 in the paper; any n x n with square boxes works): grids are digit strings read row by row.

Reading the answer: the last `<answer>` block (a `\\boxed{}` inside wins) is read as ALL its decimal digits in
order, so spaces, newlines, commas, pipes or brackets between cells are fine. It must hold exactly as many digits as
the puzzle has cells; any other count (a missing row, row labels such as "R1:") is a wrong-size grid and scores 0.0.

Scoring (`sudoku_accuracy`): 0.0 for no answer, a wrong-size grid, or a grid that changes any given clue (rewarding
partial fills of an altered puzzle would pay for solving a different puzzle); otherwise the fraction of the puzzle's
empty cells whose digit equals `solution`. A puzzle with no empty cells scores 1.0 when its clues are kept.
`sudoku_solved` is the all-or-nothing variant: 1.0 only for a complete valid grid that keeps every clue.
"""

from __future__ import annotations

import math
import re

from ._text import answer_block, check_column, last_boxed, texts_of

__all__ = ["is_valid_sudoku", "parse_sudoku_answer", "sudoku_accuracy", "sudoku_cell_score", "sudoku_solved"]

_DIGIT = re.compile(r"\d")


def parse_sudoku_answer(text: str, num_cells: int = 16) -> str | None:
    """The answered grid as a digit string, or None if there is no answer block or it has the wrong number of cells."""
    block = answer_block(text)
    if block is None:
        return None
    boxed = last_boxed(block)
    digits = "".join(_DIGIT.findall(boxed if boxed is not None else block))
    return digits if len(digits) == num_cells else None


def grid_string(value, name: str) -> str:
    """A puzzle or solution as a digit string whose length is a square; ints (leading zeros lost in a CSV) are padded.

    An int can only come from a 4x4 grid stored as a number, so it is zero-padded to 16 digits.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value).zfill(16)
    elif isinstance(value, (list, tuple)):
        value = "".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a digit string, got {type(value).__name__} {value!r}.")
    grid = "".join(value.split())
    size = math.isqrt(len(grid))
    if not grid.isdigit() or size * size != len(grid) or math.isqrt(size) ** 2 != size:
        raise ValueError(f"{name}: expected a digit string of n*n cells (16 for 4x4, 0 = empty), got {value!r}.")
    return grid


def keeps_clues(grid: str, puzzle: str) -> bool:
    """Whether every given (non-zero) cell of the puzzle is unchanged in the grid."""
    return all(p == "0" or g == p for g, p in zip(grid, puzzle))


def sudoku_cell_score(grid: str | None, puzzle: str, solution: str) -> float:
    """Share of the puzzle's empty cells filled correctly; 0.0 for no grid, a wrong size, or a changed clue."""
    if grid is None or len(grid) != len(puzzle) or not keeps_clues(grid, puzzle):
        return 0.0
    empty = [i for i, p in enumerate(puzzle) if p == "0"]
    if not empty:
        return 1.0
    return sum(grid[i] == solution[i] for i in empty) / len(empty)


def is_valid_sudoku(grid: str) -> bool:
    """Whether a full grid has every digit 1..n exactly once in each row, column and box."""
    size = math.isqrt(len(grid))
    box = math.isqrt(size)
    if size * size != len(grid) or box * box != size:
        return False
    digits = set("123456789"[:size])
    rows = [grid[r * size : (r + 1) * size] for r in range(size)]
    columns = ["".join(row[c] for row in rows) for c in range(size)]
    boxes = [
        "".join(rows[r][c] for r in range(br, br + box) for c in range(bc, bc + box))
        for br in range(0, size, box)
        for bc in range(0, size, box)
    ]
    return all(set(unit) == digits and len(unit) == size for unit in rows + columns + boxes)


def sudoku_accuracy(completions, puzzle, solution, **kwargs) -> list[float]:
    """Per completion, the share of the puzzle's empty cells filled correctly (rules in the module docstring)."""
    n = len(completions)
    puzzles = [grid_string(p, "puzzle") for p in check_column("puzzle", puzzle, n)]
    solutions = [grid_string(s, "solution") for s in check_column("solution", solution, n)]
    return [
        sudoku_cell_score(parse_sudoku_answer(text, len(p)), p, s)
        for text, p, s in zip(texts_of(completions), puzzles, solutions)
    ]


def sudoku_solved(completions, puzzle, **kwargs) -> list[float]:
    """1.0 where the answer is a complete, valid grid that keeps every clue of the puzzle, else 0.0.

    It needs no `solution` column: a valid completion of a puzzle with a unique solution is that solution.
    """
    puzzles = [grid_string(p, "puzzle") for p in check_column("puzzle", puzzle, len(completions))]
    scores = []
    for text, p in zip(texts_of(completions), puzzles):
        grid = parse_sudoku_answer(text, len(p))
        scores.append(float(grid is not None and keeps_clues(grid, p) and is_valid_sudoku(grid)))
    return scores

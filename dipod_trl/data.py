"""Datasets for the reasoning tasks (GSM8K, MATH-500, Countdown, 4x4 Sudoku) in TRL's conversational format.

Each loader returns a `datasets.Dataset` with a `prompt` column, `[{"role": "system", ...}, {"role": "user", ...}]`,
and exactly the columns that task's reward in `reward_models` reads:

    gsm8k     prompt, question, answer (the bare final number, e.g. "1200")  -> reward_models.gsm8k_accuracy
    math500   prompt, answer (LaTeX)                                         -> reward_models.math500_accuracy
    countdown prompt, numbers (list of int), target (int)                    -> reward_models.countdown_accuracy
    sudoku    prompt, puzzle, solution (16-digit strings, 0 = empty)         -> reward_models.sudoku_accuracy
    digit_sort prompt, answer (the digits in ascending order)                -> reward_models.exact_match_accuracy

`digit_sort` is the synthetic task of the offline demo: short enough for the built-in tiny model on a CPU, with a
verifiable answer. Its prompts carry no system prompt and its answers no tags.

The prompts follow d1's: the system prompt asks for the reasoning in `<reasoning>` tags and the final answer in
`<answer>` tags, and task instructions say what the answer must look like. `source` is a hub id (loaded with
`datasets.load_dataset`) or a local path: a .jsonl/.json/.csv/.parquet file, or a directory written by
`Dataset.save_to_disk`. Sudoku needs no download: puzzles with unique solutions are generated here, seeded.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
from collections.abc import Callable

from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset, load_from_disk

__all__ = [
    "COUNTDOWN_SYSTEM_PROMPT",
    "MATH_SYSTEM_PROMPT",
    "SUDOKU_SYSTEM_PROMPT",
    "SYSTEM_PROMPT",
    "SYSTEM_PROMPTS",
    "TASKS",
    "count_sudoku_solutions",
    "countdown_question",
    "generate_sudoku_puzzle",
    "generate_sudoku_puzzles",
    "load_countdown",
    "load_digit_sort",
    "load_gsm8k",
    "load_math500",
    "load_sudoku",
    "load_task",
    "make_conversational_prompt",
    "sudoku_question",
    "sudoku_split_of",
    "tokenize_prompt",
]

# ---------------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------------

SYSTEM_PROMPT = """Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>"""

MATH_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step, and write the final "
    "answer inside \\boxed{} in the answer block.\n\n" + SYSTEM_PROMPT
)

COUNTDOWN_SYSTEM_PROMPT = SYSTEM_PROMPT

SUDOKU_SYSTEM_PROMPT = """Solve the 4x4 Sudoku puzzle you are given. The puzzle is a 16-digit string that lists the \
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

SYSTEM_PROMPTS = {
    "gsm8k": SYSTEM_PROMPT,
    "math500": MATH_SYSTEM_PROMPT,
    "countdown": COUNTDOWN_SYSTEM_PROMPT,
    "sudoku": SUDOKU_SYSTEM_PROMPT,
}


def make_conversational_prompt(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """TRL's conversational prompt: a system message (unless `system_prompt` is None) and the user's question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*messages, {"role": "user", "content": question}]


def tokenize_prompt(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt: a conversational one through the chat template with the generation prompt, plain text
    as it is (no special tokens added)."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def countdown_question(numbers: list[int], target: int) -> str:
    """The Countdown instruction for one puzzle (d1's task statement, reworded)."""
    return (
        f"Using the numbers {list(numbers)}, write an arithmetic expression that equals {target}. Use every number "
        "exactly once; you may use +, -, * and / and parentheses. After your reasoning, give only the expression in "
        "the answer block, without an equals sign or the result. For example, for the numbers [2, 3, 4] and the "
        "target 5, a valid answer is:\n<answer>\n2*4-3\n</answer>"
    )


def sudoku_question(puzzle: str) -> str:
    """The user message for one Sudoku puzzle."""
    return f"Solve the following Sudoku puzzle: {puzzle}"


# ---------------------------------------------------------------------------------------------------------------------
# Reading a source: hub id or local file / directory
# ---------------------------------------------------------------------------------------------------------------------

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _looks_local(source: str) -> bool:
    """A path the user meant as local: it exists, has a data-file suffix, or starts like a path."""
    return (
        os.path.exists(source)
        or os.path.splitext(source)[1].lower() in _LOCAL_FORMATS
        or source.startswith(("/", "./", "../", "~"))
    )


def load_source(source: str, split: str, hub_config: str | None = None) -> Dataset:
    """Read `source` as a `Dataset`: a hub id with `load_dataset`, or a local file / `save_to_disk` directory.

    A local file is one split by itself, so `split` only selects within hub datasets and saved `DatasetDict`s.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source: expected a hub id or a local path, got {type(source).__name__}.")
    source = os.fspath(source)
    if not _looks_local(source):
        return load_dataset(source, hub_config, split=split)
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        raise ValueError(f"source: local path {source!r} does not exist.")
    if os.path.isdir(path):
        return _select_split(load_from_disk(path), split, source)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _LOCAL_FORMATS:
        raise ValueError(
            f"source: unsupported file type {suffix!r} for {source!r}; use one of {sorted(_LOCAL_FORMATS)}."
        )
    if suffix == ".csv":
        return _read_csv_as_strings(path)
    return load_dataset(_LOCAL_FORMATS[suffix], data_files=path, split="train")


def _select_split(data, split: str, source: str) -> Dataset:
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"split: {source!r} has the splits {sorted(data)}, not {split!r}.")
        return data[split]
    return data


def _read_csv_as_strings(path: str) -> Dataset:
    """A CSV read with every column as text: type inference would turn "0103..." puzzles into numbers."""
    import pandas as pd

    return Dataset.from_pandas(pd.read_csv(path, dtype=str, keep_default_na=False), preserve_index=False)


def _column(data: Dataset, names: tuple[str, ...], source: str, task: str) -> str:
    """The first of `names` that `data` has (case-insensitive), else a `ValueError` naming what is missing."""
    by_lower = {c.lower(): c for c in data.column_names}
    for name in names:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    raise ValueError(
        f"source: {source!r} has no {' / '.join(repr(n) for n in names)} column, which {task} needs; "
        f"its columns are {data.column_names}."
    )


_TEXT = Value("string")
_PROMPT = List({"role": _TEXT, "content": _TEXT})
TASK_FEATURES = {
    "gsm8k": Features({"prompt": _PROMPT, "question": _TEXT, "answer": _TEXT}),
    "math500": Features({"prompt": _PROMPT, "answer": _TEXT}),
    "countdown": Features({"prompt": _PROMPT, "numbers": List(Value("int64")), "target": Value("int64")}),
    "sudoku": Features({"prompt": _PROMPT, "puzzle": _TEXT, "solution": _TEXT}),
}


def _to_task_columns(data: Dataset, build: Callable[[dict], dict], task: str) -> Dataset:
    """Map each row to the task's columns, typed explicitly, and drop every other column.

    Explicit features matter: a mapped column that reuses an input name would otherwise keep the input's type
    (a CSV's "98" stays text, a JSON puzzle stays an int without its leading zeros).
    """
    return data.map(build, remove_columns=data.column_names, features=TASK_FEATURES[task])


# ---------------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------------


def gsm8k_final_answer(answer) -> str:
    """The bare final number of a GSM8K answer ("... #### 1,200" -> "1200"); a bare number passes through."""
    text = str(answer)
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    found = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not found:
        raise ValueError(f"answer: no final number in the GSM8K answer {text[-80:]!r}.")
    return found[-1].replace(",", "")


def load_gsm8k(source: str = "openai/gsm8k", split: str = "train", config: str | None = "main") -> Dataset:
    """GSM8K as prompt / question / answer, `answer` being the bare final number the reward compares against."""
    data = load_source(source, split, config)
    question = _column(data, ("question",), source, "gsm8k")
    answer = _column(data, ("answer",), source, "gsm8k")
    return _to_task_columns(
        data,
        lambda row: {
            "prompt": make_conversational_prompt(row[question], SYSTEM_PROMPTS["gsm8k"]),
            "question": row[question],
            "answer": gsm8k_final_answer(row[answer]),
        },
        "gsm8k",
    )


def load_math500(source: str = "HuggingFaceH4/MATH-500", split: str = "test") -> Dataset:
    """MATH-500 as prompt / answer. A source with only full `solution`s gets the last `\\boxed{}` as the answer."""
    from reward_models._text import last_boxed

    data = load_source(source, split)
    problem = _column(data, ("problem", "question"), source, "math500")
    has_answer = any(c.lower() == "answer" for c in data.column_names)
    answer = _column(data, ("answer",) if has_answer else ("solution",), source, "math500")

    def build(row):
        reference = str(row[answer]) if has_answer else last_boxed(str(row[answer]))
        if not reference:
            raise ValueError(f"source: a {source!r} row has no final answer: {str(row[answer])[-80:]!r}.")
        return {"prompt": make_conversational_prompt(row[problem], SYSTEM_PROMPTS["math500"]), "answer": reference}

    return _to_task_columns(data, build, "math500")


def _int_list(value, source: str) -> list[int]:
    """A row's numbers as ints; CSV files hold them as text like "[3, 7, 25]"."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError(f"source: {source!r} has a numbers value that is not a list: {value!r}.") from None
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"source: {source!r} has a numbers value that is not a list of integers: {value!r}.") from None


def _int(value, source: str) -> int:
    """A row's target as an int ("98" in CSV files)."""
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"source: {source!r} has a target that is not an integer: {value!r}.") from None


def load_countdown(
    source: str = "Jiayi-Pan/Countdown-Tasks-3to4", split: str = "train", num_numbers: int | None = None
) -> Dataset:
    """Countdown as prompt / numbers / target. `num_numbers=3` keeps the 3-number puzzles, as d1 trains on."""
    data = load_source(source, split)
    nums = _column(data, ("nums", "numbers"), source, "countdown")
    target = _column(data, ("target",), source, "countdown")
    data = data.map(lambda row: {"__numbers": _int_list(row[nums], source), "__target": _int(row[target], source)})
    if num_numbers is not None:
        data = data.filter(lambda row: len(row["__numbers"]) == num_numbers)
    return _to_task_columns(
        data,
        lambda row: {
            "prompt": make_conversational_prompt(
                countdown_question(row["__numbers"], row["__target"]), SYSTEM_PROMPTS["countdown"]
            ),
            "numbers": row["__numbers"],
            "target": row["__target"],
        },
        "countdown",
    )


def load_sudoku(
    source: str | None = None,
    split: str = "train",
    num_puzzles: int = 1000,
    seed: int = 0,
    min_clues: int | tuple[int, int] = 4,
) -> Dataset:
    """4x4 Sudoku as prompt / puzzle / solution: generated (source None) or read from a file with those columns.

    Generated splits are disjoint: a puzzle belongs to "test" when `sudoku_split_of` says so, and to "train"
    otherwise, so `load_sudoku(split="test")` never repeats a training puzzle, whatever the seeds. `min_clues`
    (an int or a `(low, high)` range) sets how few clues the puzzles keep: see `generate_sudoku_puzzles`.
    """
    if source is None:
        if split not in ("train", "test"):
            raise ValueError(f"split: generated Sudoku has the splits 'train' and 'test', not {split!r}.")
        pairs = generate_sudoku_puzzles(
            num_puzzles, seed=seed, min_clues=min_clues, accept=lambda p: sudoku_split_of(p) == split
        )
        data = Dataset.from_dict({"puzzle": [p for p, _ in pairs], "solution": [s for _, s in pairs]})
        puzzle, solution = "puzzle", "solution"
    else:
        data = load_source(source, split)
        puzzle = _column(data, ("puzzle",), source, "sudoku")
        solution = _column(data, ("solution",), source, "sudoku")
    return _to_task_columns(
        data,
        lambda row: {
            "prompt": make_conversational_prompt(
                sudoku_question(_grid(row[puzzle], "puzzle")), SYSTEM_PROMPTS["sudoku"]
            ),
            "puzzle": _grid(row[puzzle], "puzzle"),
            "solution": _grid(row[solution], "solution"),
        },
        "sudoku",
    )


def _grid(value, name: str) -> str:
    """A 16-digit grid string; an int (a CSV/JSON that dropped leading zeros) is zero-padded back."""
    grid = str(value).strip().zfill(16) if isinstance(value, int) else str(value).strip()
    if len(grid) != 16 or not grid.isdigit():
        raise ValueError(f"{name}: expected a 16-digit string (0 = empty), got {value!r}.")
    return grid


def load_digit_sort(split: str = "train", num_examples: int = 2000, length: int = 5, seed: int = 0) -> Dataset:
    """The demo task: sort a string of `length` random digits ("sort: 31415" -> "11345").

    Generated and seeded; the "train" and "test" splits are disjoint (a digit string belongs to "test" when its hash
    falls in the first tenth, see `sudoku_split_of`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: digit_sort has the splits 'train' and 'test', not {split!r}.")
    if num_examples < 1 or length < 1:
        raise ValueError(f"num_examples and length must be positive, got {num_examples} and {length}.")
    rng = random.Random(f"digit_sort-{split}-{seed}")
    rows = []
    while len(rows) < num_examples:
        digits = "".join(rng.choice("0123456789") for _ in range(length))
        if sudoku_split_of(digits) == split:
            prompt = make_conversational_prompt(f"sort: {digits}", None)
            rows.append({"prompt": prompt, "answer": "".join(sorted(digits))})
    return Dataset.from_list(rows)


TASKS = {
    "gsm8k": load_gsm8k,
    "math500": load_math500,
    "countdown": load_countdown,
    "sudoku": load_sudoku,
    "digit_sort": load_digit_sort,
}


def load_task(task: str, source: str | None = None, split: str | None = None, **kwargs) -> Dataset:
    """Load a task by name (see `TASKS`); a `source` or `split` of None keeps the loader's default."""
    if task not in TASKS:
        raise ValueError(f"task: unknown task {task!r}; expected one of {sorted(TASKS)}.")
    if source is not None:
        kwargs["source"] = source
    if split is not None:
        kwargs["split"] = split
    return TASKS[task](**kwargs)


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


def count_sudoku_solutions(grid: list[int], limit: int = 2) -> int:
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
        count += count_sudoku_solutions(grid, limit - count)
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


def generate_sudoku_puzzle(rng: random.Random, min_clues: int = 4) -> tuple[str, str]:
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
        if count_sudoku_solutions(puzzle) != 1:
            puzzle[cell] = digit
    return "".join(map(str, puzzle)), "".join(map(str, solution))


def generate_sudoku_puzzles(
    num_puzzles: int,
    seed: int = 0,
    min_clues: int | tuple[int, int] = 4,
    accept: Callable[[str], bool] | None = None,
    max_attempts: int | None = None,
) -> list[tuple[str, str]]:
    """`num_puzzles` distinct unique-solution puzzles, deterministic for a seed; `accept` filters puzzles.

    `min_clues` is the clue floor of `generate_sudoku_puzzle`; a `(low, high)` pair draws the floor per puzzle, for
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
        puzzle, solution = generate_sudoku_puzzle(rng, floor)
        if puzzle not in seen and (accept is None or accept(puzzle)):
            seen.add(puzzle)
            pairs.append((puzzle, solution))
    if len(pairs) < num_puzzles:
        raise ValueError(
            f"num_puzzles: only {len(pairs)} distinct puzzles found in {max_attempts} draws; ask for fewer, or allow "
            "more clues (min_clues) so that more distinct puzzles exist."
        )
    return pairs


def sudoku_split_of(puzzle: str, test_fraction: float = 0.1) -> str:
    """"test" for a stable `test_fraction` of all puzzles (by a hash of the puzzle string), else "train"."""
    bucket = int(hashlib.sha256(puzzle.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return "test" if bucket < test_fraction else "train"

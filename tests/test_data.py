"""Dataset loaders (local files only: no hub access in tests), prompts, and the 4x4 Sudoku generator."""

from __future__ import annotations

import itertools
import json

import pytest
from datasets import Dataset, DatasetDict

import dipod_trl.tasks.source as source_module
from dipod_trl.tasks import countdown, gsm8k, load_task, make_conversational_prompt, math500, sudoku
from dipod_trl.tasks import split_of as sudoku_split_of
from dipod_trl.tasks.base import FORMAT_PROMPT as SYSTEM_PROMPT
from dipod_trl.tasks.countdown import load as load_countdown
from dipod_trl.tasks.gsm8k import load as load_gsm8k
from dipod_trl.tasks.math500 import load as load_math500
from dipod_trl.tasks.sudoku import SYSTEM_PROMPT as SUDOKU_SYSTEM_PROMPT
from dipod_trl.tasks.sudoku import count_solutions as count_sudoku_solutions
from dipod_trl.tasks.sudoku import generate_puzzles as generate_sudoku_puzzles
from dipod_trl.tasks.sudoku import load as load_sudoku
from reward_models import countdown_accuracy, gsm8k_accuracy, math500_accuracy, sudoku_accuracy, sudoku_solved

SYSTEM_PROMPTS = {module.__name__.rsplit(".", 1)[1]: module.SYSTEM_PROMPT
                  for module in (gsm8k, math500, countdown, sudoku)}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, then half as many in May. How many in all?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72",
    },
    {"question": "A TV costs $1,000 and a radio $200. What do both cost?", "answer": "1000 + 200 = 1200\n#### 1,200"},
    {"question": "It is 5 degrees and drops by 8. What is it now?", "answer": "5 - 8 = -3\n#### -3"},
]


# ---------------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------------


def test_conversational_prompt_format():
    assert make_conversational_prompt("What is 2+2?") == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert make_conversational_prompt("Hi", system_prompt=None) == [{"role": "user", "content": "Hi"}]
    for prompt in SYSTEM_PROMPTS.values():
        assert "<reasoning>" in prompt and "</reasoning>" in prompt
        assert "<answer>" in prompt and "</answer>" in prompt
    assert "\\boxed{}" in SYSTEM_PROMPTS["math500"]
    assert "0 marks an empty cell" in SUDOKU_SYSTEM_PROMPT


# ---------------------------------------------------------------------------------------------------------------------
# Loaders over local files
# ---------------------------------------------------------------------------------------------------------------------


def test_load_gsm8k_from_jsonl(tmp_path):
    rows = [dict(row, extra="dropped") for row in GSM8K_ROWS]
    dataset = load_gsm8k(str(write_jsonl(tmp_path / "gsm8k.jsonl", rows)))
    assert sorted(dataset.column_names) == ["answer", "prompt", "question"]
    assert dataset["answer"] == ["72", "1200", "-3"]
    assert dataset[0]["prompt"] == make_conversational_prompt(GSM8K_ROWS[0]["question"], SYSTEM_PROMPT)
    assert dataset["question"] == [row["question"] for row in GSM8K_ROWS]
    completions = ["<answer>72</answer>", "<answer>$1,200</answer>", "<answer>-3</answer>"]
    assert gsm8k_accuracy(completions, answer=dataset["answer"]) == [1.0, 1.0, 1.0]


def test_load_gsm8k_from_parquet_json_and_saved_dataset_dict(tmp_path):
    Dataset.from_list(GSM8K_ROWS).to_parquet(str(tmp_path / "gsm8k.parquet"))
    (tmp_path / "gsm8k.json").write_text(json.dumps(GSM8K_ROWS))
    DatasetDict({"train": Dataset.from_list(GSM8K_ROWS[:2]), "test": Dataset.from_list(GSM8K_ROWS[2:])}).save_to_disk(
        str(tmp_path / "saved")
    )
    assert load_gsm8k(str(tmp_path / "gsm8k.parquet"))["answer"] == ["72", "1200", "-3"]
    assert load_gsm8k(str(tmp_path / "gsm8k.json"))["answer"] == ["72", "1200", "-3"]
    assert load_gsm8k(str(tmp_path / "saved"), split="test")["answer"] == ["-3"]
    assert load_gsm8k(tmp_path / "saved", split="train")["answer"] == ["72", "1200"]  # a Path works too
    with pytest.raises(ValueError, match="split"):
        load_gsm8k(str(tmp_path / "saved"), split="validation")


def test_load_math500_from_csv_and_from_solutions(tmp_path):
    (tmp_path / "math.csv").write_text(
        'problem,answer,subject\n"Compute $\\frac{28}{6}$.",\\frac{14}{3},Algebra\n"What is $2^3$?",8,Algebra\n'
    )
    dataset = load_math500(str(tmp_path / "math.csv"))
    assert sorted(dataset.column_names) == ["answer", "prompt", "question"]
    assert dataset["answer"] == ["\\frac{14}{3}", "8"]
    assert dataset[1]["prompt"][0]["content"] == SYSTEM_PROMPTS["math500"]
    assert dataset[1]["prompt"][1]["content"] == "What is $2^3$?"
    completions = ["<answer>\\boxed{\\dfrac{14}{3}}</answer>", "<answer>\\boxed{9}</answer>"]
    assert math500_accuracy(completions, **dataset[:]) == [1.0, 0.0]

    solutions = [{"problem": "Add 2 and 3.", "solution": "We get $2+3=\\boxed{5}$."}]
    assert load_math500(str(write_jsonl(tmp_path / "math_solutions.jsonl", solutions)))["answer"] == ["5"]


def test_load_countdown_from_csv_and_jsonl(tmp_path):
    (tmp_path / "countdown.csv").write_text('target,nums\n98,"[44, 19, 35]"\n24,"[2, 3, 4, 1]"\n')
    dataset = load_countdown(str(tmp_path / "countdown.csv"))
    assert sorted(dataset.column_names) == ["numbers", "prompt", "target"]
    assert dataset["numbers"] == [[44, 19, 35], [2, 3, 4, 1]]
    assert dataset["target"] == [98, 24]
    assert "[44, 19, 35]" in dataset[0]["prompt"][1]["content"] and "98" in dataset[0]["prompt"][1]["content"]

    rows = [{"target": 98, "nums": [44, 19, 35]}, {"target": 24, "nums": [2, 3, 4, 1]}]
    three = load_countdown(str(write_jsonl(tmp_path / "countdown.jsonl", rows)), num_numbers=3)
    assert three["numbers"] == [[44, 19, 35]]
    assert countdown_accuracy(["<answer>44 + 19 + 35</answer>"], **{k: three[k] for k in ("numbers", "target")}) == [
        1.0
    ]


def test_load_sudoku_from_d1_style_csv_keeps_leading_zeros(tmp_path):
    (tmp_path / "sudoku.csv").write_text("Puzzle,Solution\n0030040221000001,1234341221434321\n")
    dataset = load_sudoku(str(tmp_path / "sudoku.csv"))
    assert sorted(dataset.column_names) == ["prompt", "puzzle", "solution"]
    assert dataset["puzzle"] == ["0030040221000001"]
    assert dataset[0]["prompt"][1]["content"] == "Solve the following Sudoku puzzle: 0030040221000001"
    # Numbers in JSON lose their leading zeros; the loader pads them back.
    rows = [{"puzzle": 30040221000001, "solution": 1234341221434321}]
    assert load_sudoku(str(write_jsonl(tmp_path / "sudoku.jsonl", rows)))["puzzle"] == ["0030040221000001"]
    with pytest.raises(ValueError, match="puzzle"):
        load_sudoku(str(write_jsonl(tmp_path / "bad.jsonl", [{"puzzle": "123", "solution": "1234341221434321"}])))


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="'answer'"):
        load_gsm8k(str(write_jsonl(tmp_path / "no_answer.jsonl", [{"question": "q"}])))
    with pytest.raises(ValueError, match="target"):
        load_countdown(str(write_jsonl(tmp_path / "no_target.jsonl", [{"nums": [1, 2]}])))
    with pytest.raises(ValueError, match="does not exist"):
        load_gsm8k(str(tmp_path / "missing.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_gsm8k(str(tmp_path / "data.txt"))
    with pytest.raises(ValueError, match="task"):
        load_task("chess")


def test_hub_ids_go_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return Dataset.from_list(GSM8K_ROWS)

    monkeypatch.setattr(source_module, "load_dataset", fake_load_dataset)
    dataset = load_task("gsm8k", split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert dataset["answer"] == ["72", "1200", "-3"]


def test_load_task_dispatches(tmp_path):
    sudoku = load_task("sudoku", num_puzzles=3, seed=1)
    assert sudoku.num_rows == 3 and sorted(sudoku.column_names) == ["prompt", "puzzle", "solution"]
    gsm8k = load_task("gsm8k", source=str(write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)))
    assert gsm8k["answer"] == ["72", "1200", "-3"]


# ---------------------------------------------------------------------------------------------------------------------
# Sudoku generator
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_4x4_grids():
    """Every valid 4x4 Sudoku grid, by brute force over rows that are permutations (independent of the solver)."""
    rows = list(itertools.permutations((1, 2, 3, 4)))
    grids = []
    for grid_rows in itertools.product(rows, repeat=4):
        columns_ok = all(len({row[c] for row in grid_rows}) == 4 for c in range(4))
        boxes_ok = all(
            len({grid_rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1)}) == 4 for br in (0, 2) for bc in (0, 2)
        )
        if columns_ok and boxes_ok:
            grids.append("".join(str(d) for row in grid_rows for d in row))
    return grids


def test_there_are_288_grids_and_the_solver_counts_them(all_4x4_grids):
    assert len(all_4x4_grids) == 288
    assert count_sudoku_solutions([0] * 16, limit=1000) == 288
    assert count_sudoku_solutions([0] * 16) == 2  # stops at the default limit
    assert count_sudoku_solutions([int(d) for d in all_4x4_grids[0]]) == 1
    assert count_sudoku_solutions([1, 1] + [0] * 14) == 0


@pytest.mark.parametrize("min_clues", [4, (4, 10)])
def test_generated_puzzles_have_unique_solutions_by_brute_force(all_4x4_grids, min_clues):
    pairs = generate_sudoku_puzzles(40, seed=7, min_clues=min_clues)
    assert len({p for p, _ in pairs}) == 40
    for puzzle, solution in pairs:
        matches = [g for g in all_4x4_grids if all(p == "0" or p == d for p, d in zip(puzzle, g))]
        assert matches == [solution], puzzle
        clues = sum(c != "0" for c in puzzle)
        assert clues >= (min_clues if isinstance(min_clues, int) else min_clues[0])
        if isinstance(min_clues, int):
            assert clues <= 6  # removing clues until uniqueness breaks leaves near-minimal puzzles


def test_generator_is_deterministic_and_seeded():
    assert generate_sudoku_puzzles(10, seed=3) == generate_sudoku_puzzles(10, seed=3)
    assert generate_sudoku_puzzles(10, seed=3) != generate_sudoku_puzzles(10, seed=4)
    assert load_sudoku(num_puzzles=5, seed=2)[:] == load_sudoku(num_puzzles=5, seed=2)[:]
    with pytest.raises(ValueError, match="num_puzzles"):
        generate_sudoku_puzzles(5, seed=0, max_attempts=3)


def test_generated_splits_are_disjoint_and_solvable():
    train = load_sudoku(split="train", num_puzzles=60, seed=0)
    test = load_sudoku(split="test", num_puzzles=6, seed=0)
    assert not set(train["puzzle"]) & set(test["puzzle"])
    assert {sudoku_split_of(p) for p in test["puzzle"]} == {"test"}
    assert {sudoku_split_of(p) for p in train["puzzle"]} == {"train"}
    with pytest.raises(ValueError, match="split"):
        load_sudoku(split="validation", num_puzzles=1)
    # The rows plug straight into the rewards: a completion holding the solution scores 1.0.
    completions = [f"<reasoning>\n...\n</reasoning>\n<answer>\n{s}\n</answer>" for s in test["solution"]]
    assert sudoku_accuracy(completions, puzzle=test["puzzle"], solution=test["solution"]) == [1.0] * 6
    assert sudoku_solved(completions, puzzle=test["puzzle"]) == [1.0] * 6


def test_digit_sort_splits_are_disjoint_seeded_and_sorted():
    from dipod_trl.tasks.digit_sort import load as load_digit_sort

    train = load_digit_sort("train", num_examples=300, seed=1)
    test = load_digit_sort("test", num_examples=100, seed=1)
    digits = lambda ds: {row["prompt"][-1]["content"].split(": ")[1] for row in ds}  # noqa: E731
    assert not digits(train) & digits(test)
    assert load_digit_sort("train", num_examples=300, seed=1)["answer"] == train["answer"]
    for row in train:
        assert row["answer"] == "".join(sorted(row["prompt"][-1]["content"].split(": ")[1]))
    with pytest.raises(ValueError, match="split"):
        load_digit_sort("validation")

"""The task registry: one module per task, each with its prompt layouts, loader, reward mix, scoring and SFT target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dipod_trl.commands.reward_resolution import resolve_rewards
from dipod_trl.commands.task_data import TaskArguments, load_datasets
from dipod_trl.models import build_tiny_tokenizer
from dipod_trl.tasks import TASKS, countdown, get_task, gsm8k, load_task, math500, sudoku, tokenize_prompt

PROMPTS = json.loads((Path(__file__).parent / "fixtures" / "d1_release" / "prompts.json").read_text())


def test_every_task_is_registered_whole():
    assert sorted(TASKS) == ["countdown", "digit_sort", "gsm8k", "math500", "sudoku"]
    for name, task in TASKS.items():
        assert task.name == name and callable(task.load) and callable(task.accuracy)
        funcs, weights = task.rewards()
        assert task.accuracy in funcs and all(w > 0 for w in weights)
        assert (task.d1_accuracy is None) == (task.d1_record is None) == (name == "digit_sort")


def test_d1_prompts_are_the_releases_own():
    """The user messages equal those rendered from d1's and SPG's files (fixture), for training and evaluation."""
    q, numbers, target, puzzle = PROMPTS["question"], PROMPTS["numbers"], PROMPTS["target"], PROMPTS["puzzle"]
    built = {
        "gsm8k": lambda style: gsm8k.prompt(q, style),
        "math500": lambda style: math500.prompt(q, style),
        "countdown": lambda style: countdown.prompt(numbers, target, style),
        "sudoku": lambda style: sudoku.prompt(puzzle, style),
        "sudoku_3shot": lambda style: sudoku.prompt(puzzle, style, few_shot=3),
    }
    for style in ("d1", "d1_eval"):
        for name, make in built.items():
            messages = make(style)
            assert messages[0] == {"role": "user", "content": PROMPTS[style][name]}, (style, name)
            assert messages[1:] == ([{"role": "assistant", "content": "<reasoning>"}] if style == "d1_eval" else [])


def test_a_prefilled_prompt_continues_the_assistant_turn():
    tokenizer = build_tiny_tokenizer()
    prefilled = [{"role": "user", "content": "sort: 31"}, {"role": "assistant", "content": "<reasoning>"}]
    ids = tokenize_prompt(tokenizer, prefilled)
    opened = tokenize_prompt(tokenizer, [{"role": "user", "content": "sort: 31"}])
    assert tokenizer.decode(ids).endswith("<|assistant|><reasoning>")
    assert ids[: len(opened)] == opened  # the same prompt, then the opened turn; no end-of-turn token after it


def test_few_shot_and_prompt_style_are_checked_and_reach_the_loader():
    data = load_datasets(TaskArguments(task="sudoku", prompt_style="d1", few_shot=3))[0]
    assert data[0]["prompt"][0]["content"].count("Question:\nSolve the following Sudoku puzzle") == 3
    assert [m["role"] for m in data[0]["prompt"]] == ["user"]
    evaluation = load_task("sudoku", split="test", num_puzzles=2, prompt_style="d1_eval", few_shot=3)
    assert evaluation[0]["prompt"][-1] == {"role": "assistant", "content": "<reasoning>"}
    with pytest.raises(ValueError, match="'d1_eval' opens the answer"):  # TRL would add a generation prompt after it
        load_datasets(TaskArguments(task="sudoku", prompt_style="d1_eval"))
    with pytest.raises(ValueError, match="few_shot: sudoku has 3 worked examples"):
        load_task("sudoku", num_puzzles=2, few_shot=4)
    with pytest.raises(ValueError, match="few_shot: digit_sort has 0"):
        load_task("digit_sort", few_shot=1)
    with pytest.raises(ValueError, match="prompt_style"):
        load_task("sudoku", num_puzzles=2, prompt_style="d2")


def test_sft_targets_score_full_marks_under_the_tasks_own_scoring():
    for name in ("sudoku", "digit_sort"):
        task = get_task(name)
        rows = load_task(name, split="test", **({"num_puzzles": 5} if name == "sudoku" else {"num_examples": 5}))
        completions = [task.sft_completion(row) for row in rows]
        columns = {c: rows[c] for c in rows.column_names if c != "prompt"}
        assert task.accuracy(completions, **columns) == [1.0] * 5
        if task.d1_accuracy is not None:
            assert task.d1_accuracy(completions, **columns) == [1.0] * 5


def test_the_default_rewards_of_a_task_score_its_right_answers_above_wrong_ones():
    """A recipe without reward_funcs trains on its task's mix: the weighted sum scores the reference completion of
    every example above the same completion with its answer reversed."""
    funcs, weights = resolve_rewards(TaskArguments(task="digit_sort"), None)
    assert len(funcs) == len(weights) >= 1
    task = get_task("digit_sort")
    rows = load_task("digit_sort", split="test", num_examples=16)
    right = [task.sft_completion(row) for row in rows]
    wrong = [text.replace(row["answer"], row["answer"][::-1]) for text, row in zip(right, rows)]
    assert all(a != b for a, b in zip(right, wrong))  # every reversed answer differs (no palindromes in the draw)
    columns = {c: rows[c] for c in rows.column_names if c != "prompt"}

    def total(completions):
        scores = [f(prompts=rows["prompt"], completions=completions, **columns) for f in funcs]
        return [sum(w * s[i] for w, s in zip(weights, scores)) for i in range(len(rows))]

    assert all(r > w for r, w in zip(total(right), total(wrong)))
    assert resolve_rewards(TaskArguments(task="countdown"), [1.0, 0.0])[1] == [1.0, 0.0]  # a recipe's weights win


def test_d1s_own_test_files_load(tmp_path):
    """d1's Countdown test file (numbers as "30,100,93", target as "output") and Sudoku CSV (Puzzle, Solution)."""
    path = tmp_path / "countdown_cd3_test.jsonl"
    path.write_text('{"input": "30,100,93", "output": "23"}\n{"input": "83,18,75", "output": "10"}\n')
    data = load_task("countdown", str(path), prompt_style="d1_eval")
    assert data["numbers"] == [[30, 100, 93], [83, 18, 75]] and data["target"] == [23, 10]
    assert data[0]["prompt"][0]["content"].endswith("Numbers: [30, 100, 93]\nTarget: 23")
    csv_path = tmp_path / "4x4_test_sudoku.csv"
    csv_path.write_text("Puzzle,Solution\n3102200002100320,3142243142131324\n")
    sudoku_rows = load_task("sudoku", str(csv_path))
    assert sudoku_rows[0]["puzzle"] == "3102200002100320" and sudoku_rows[0]["solution"] == "3142243142131324"

"""`reward_models.d1` scores as the DiPOD release's evaluation parser (d1's parser + a GSM8K fallback) does.

The fixtures are slices of the release's LLaDA-8B-Instruct generation files for lengths 128 and 512, each item with
the verdict the release's `parse_and_get_acc.py` gives it (produced by running that parser on the whole files). The
slices favour items on which d1's and the project's scoring disagree and items taking the parser's rarer branches.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reward_models import d1

FIXTURES = Path(__file__).parent / "fixtures" / "d1_release"
SCORERS = {
    "gsm8k": d1.gsm8k_accuracy,
    "math500": d1.math500_accuracy,
    "countdown": d1.countdown_accuracy,
    "sudoku": d1.sudoku_accuracy,
}


def load_items(task: str, length: int) -> list[dict]:
    return json.loads((FIXTURES / f"{task}_{length}.json").read_text())["items"]


def d1_columns(task: str, items: list[dict]) -> dict[str, list]:
    """The scoring columns as d1's files hold them (ground truth in d1's own form)."""
    truths = [item["ground_truth"] for item in items]
    if task == "countdown":
        return {"numbers": [t[0] for t in truths], "target": [t[1] for t in truths]}
    if task == "sudoku":
        return {"puzzle": [item["columns"]["puzzle"] for item in items], "solution": truths}
    return {"answer": truths}


@pytest.mark.parametrize("length", [128, 512])
@pytest.mark.parametrize("task", sorted(SCORERS))
def test_d1_scoring_agrees_item_by_item_with_the_release_parser(task, length):
    items = load_items(task, length)
    assert len(items) >= 30
    scores = SCORERS[task]([item["generations"] for item in items], **d1_columns(task, items))
    disagreements = [(item["file"], item["index"], s, item["d1_score"]) for item, s in zip(items, scores)
                     if s != item["d1_score"]]
    assert disagreements == []
    assert 0 < sum(scores) < len(scores)  # the slice holds both verdicts


@pytest.mark.parametrize("task", sorted(SCORERS))
def test_d1_scoring_reads_the_project_dataset_columns_alike(task):
    """The dataset's own columns (bare-number GSM8K answers, numbers/target, puzzle/solution) give the same verdicts
    as d1's stored ground truth, so `dipod eval --scoring d1` scores the project's rows as the paper's tables."""
    items = load_items(task, 512)
    texts = [item["generations"] for item in items]
    ours = SCORERS[task](texts, **{k: [item["columns"][k] for item in items] for k in items[0]["columns"]})
    if task == "gsm8k":  # d1 reads no negative reference ("#### -3"): such questions never count
        ours = [0.0 if item["ground_truth"] is None else s for item, s in zip(items, ours)]
    assert ours == [item["d1_score"] for item in items]


def test_sudoku_cells_sum_to_d1s_reported_share():
    """d1's table: correct cells over empty cells, summed over the puzzles."""
    items = load_items("sudoku", 128)
    cells = [d1.sudoku_cells(item["generations"], item["columns"]["puzzle"], item["ground_truth"]) for item in items]
    assert [c for c, _ in cells] == [item["correct_cells"] for item in items]
    assert [e for _, e in cells] == [item["empty_cells"] for item in items]


def test_gsm8k_fallback_reads_an_answer_block_that_was_never_closed():
    assert d1.gsm8k_accuracy(["<reasoning>6*3</reasoning><answer>\nso 18"], ["18"]) == [1.0]
    assert d1.gsm8k_accuracy(["<answer>\n\\boxed{18}\n</answer>", "\\boxed{...} <answer>17</answer>"],
                             [18.0, 18.0]) == [1.0, 0.0]
    assert d1.gsm8k_accuracy(["<answer>-3</answer>"], ["-3"]) == [0.0]  # d1's reference reading drops the sign


def test_countdown_evaluates_python_arithmetic_and_refuses_runaway_powers():
    assert d1.countdown_accuracy(["\\boxed{55 - 53}"], [[49, 55, 53]], [2]) == [0.0]  # 49 unused
    assert d1.countdown_accuracy(["\\boxed{(55 - 53) * 49}"], [[49, 55, 53]], [98]) == [1.0]
    assert d1.countdown_accuracy(["\\boxed{2 ** 3 + 1}"], [[2, 3, 1]], [9]) == [1.0]
    assert d1.countdown_accuracy(["\\boxed{99 ** 99999 - 1}"], [[99, 99999, 1]], [5]) == [0.0]  # no hang
    assert d1.countdown_accuracy(["\\boxed{(2)(3)}"], [[2, 3]], [6]) == [0.0]  # calling an int fails under eval

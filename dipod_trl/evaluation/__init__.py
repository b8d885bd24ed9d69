"""Task evaluation: `dipod eval` and checkpoint sweeps.

    arguments   `EvalArguments`, the options of `dipod eval`
    records     the JSON-lines record store (resumable, keyed by the run's setup)
    evaluator   batched generation and scoring of a test split
    d1_files    d1's evaluation files and example draw
    sweep       every checkpoint of a run at several generation lengths
"""

from .arguments import EvalArguments
from .evaluator import evaluate_records, evaluate_task

__all__ = ["EvalArguments", "evaluate_records", "evaluate_task"]

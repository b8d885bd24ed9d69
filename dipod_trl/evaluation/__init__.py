"""Task evaluation: `dipod eval` and checkpoint sweeps (their options: `dipod_trl.commands.eval_arguments`).

    records     the JSON-lines record store (resumable, keyed by the run's setup)
    evaluator   batched generation and scoring of a test split
    d1_files    d1's evaluation files and example draw
    one_model   `dipod eval --model`: one model at one or more lengths
    sweep       every checkpoint of a run at several generation lengths
"""

from .d1_files import d1_subset, write_d1_generations
from .evaluator import ScoringPlan, eval_plan, evaluate_model, evaluate_records, evaluate_task, scoring_plan
from .records import read_records, setup_key
from .sweep import run_sweep

__all__ = ["ScoringPlan", "d1_subset", "eval_plan", "evaluate_model", "evaluate_records",
           "evaluate_task", "read_records", "run_sweep", "scoring_plan", "setup_key", "write_d1_generations"]

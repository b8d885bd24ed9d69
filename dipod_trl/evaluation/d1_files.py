"""d1's evaluation files and example draw, so d1's own parser reads our results and scores the rows it scores."""

from __future__ import annotations

import json


def write_d1_generations(records: list[dict], path: str, *, model_path: str, checkpoint_path: str, gen_length: int,
                         steps: int, block_length: int, wall_time: float = 0.0) -> None:
    """d1's evaluation file: one entry per generation with d1's question and ground truth and the raw canvas text,
    so d1's own parser (`parse_and_get_acc.py`) reads it as it reads d1's. A task d1 did not evaluate keeps its own
    question and ground-truth column(s)."""
    def d1_fields(r):
        if "d1" in r:
            return r["d1"]["question"], r["d1"]["ground_truth"]
        truth = r["ground_truth"]
        return r["question"], next(iter(truth.values())) if len(truth) == 1 else truth

    generations = [
        {"question": d1_fields(r)[0], "prompt_input": r["prompt_input"], "generations": text,
         "ground_truth": d1_fields(r)[1]}
        for r in records for text in r["raw_generations"]
    ]
    with open(path, "w") as f:
        json.dump({"generations": generations, "metrics": {"wall_time": wall_time, "total_processed": len(generations)},
                   "model_path": model_path, "checkpoint_path": checkpoint_path, "gen_length": gen_length,
                   "diffusion_steps": steps, "block_length": block_length}, f, indent=2)


D1_SUBSAMPLE = {"countdown": 256, "sudoku": 256}  # d1's `num_evals`; GSM8K and MATH-500 are evaluated whole


def d1_subset(dataset, task: str):
    """The rows d1's evaluation scores, in its order: `np.random.seed(42)` then `choice(len, n, replace=False)` (its
    `subsample`; checked against the puzzles of the release's Sudoku generation files)."""
    import numpy as np

    if task not in D1_SUBSAMPLE:
        return dataset
    n = D1_SUBSAMPLE[task]
    if len(dataset) < n:
        raise ValueError(f"d1_subset: d1 draws {n} {task} rows, but the dataset has {len(dataset)}; pass d1's test "
                         "file as --dataset_source.")
    return dataset.select(np.random.RandomState(42).choice(len(dataset), n, replace=False).tolist())


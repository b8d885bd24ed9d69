"""Checkpoint selection as the paper's authors did it: every checkpoint of a run at several generation lengths.

    dipod eval --task gsm8k --checkpoints outputs/run/checkpoint-* --gen_length 128 256 512
    accelerate launch --num_processes 8 -m dipod_trl eval --task gsm8k --checkpoints ... --gen_length 128 256 512

Block length 32 and steps = length / 2 by default (d1's evaluation). For each checkpoint and length the sweep writes
the records (resumable, under `records/`), d1's evaluation file (`<task>_<checkpoint>_<length>_<steps>_0_generations
.json`, readable by d1's own parser), and at the end `summary.csv`, `summary.md` and `accuracy_vs_step.png`. A
checkpoint whose records are all there is not even loaded again. Adapter-only (LoRA) checkpoints load through the same
loader as `dipod eval --model`. A checkpoint whose save was cut short (no completion marker and no readable weights,
or files shorter than its marker lists) is skipped with a warning naming it, and the summary covers the others.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..saving.checkpoints import weights_problem
from .d1_files import write_d1_generations
from .evaluator import eval_plan, evaluate_model, load_eval_dataset, process_state, scoring_plan, summarise
from .records import finished_records, question_text, setup_key

if TYPE_CHECKING:  # the options of `dipod eval`, declared in the command layer
    from ..commands.eval_arguments import EvalArguments


def expand_checkpoints(patterns: list[str]) -> list[str]:
    """Checkpoint directories from paths or globs (the shell may have expanded them already), ordered by step."""
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise ValueError(f"checkpoints: nothing matches {pattern!r}; is the run's output_dir right?")
        for path in matches:
            if not os.path.isdir(path):
                raise ValueError(f"checkpoints: {path!r} is not a directory.")
            found.append(os.path.abspath(path))
    return sorted(dict.fromkeys(found), key=lambda p: (checkpoint_step(p) is None, checkpoint_step(p) or 0, p))


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint: from `checkpoint-N`, else from its `trainer_state.json`, else None."""
    match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(path.rstrip("/")))
    if match:
        return int(match.group(1))
    state = os.path.join(path, "trainer_state.json")
    if os.path.exists(state):
        try:
            with open(state) as f:
                return json.load(f).get("global_step")
        except ValueError:  # cut short: the step is unknown, and the checkpoint is judged on its weights
            return None
    return None


def checkpoint_name(path: str) -> str:
    """d1's name of a checkpoint: `<run folder>_<checkpoint folder>`."""
    parts = os.path.abspath(path).rstrip("/").split(os.sep)
    return f"{parts[-2]}_{parts[-1]}"


def run_sweep(args: EvalArguments, load_model: Callable) -> list[dict]:
    """Evaluate every checkpoint at every length; returns the summary rows (also written as CSV, markdown, PNG)."""
    from ..tasks import get_task

    state = process_state()
    task = get_task(args.task)
    checkpoints = expand_checkpoints(args.checkpoints)
    out_dir = args.output_dir or os.path.join(os.path.dirname(checkpoints[0]), f"eval_{task.name}")
    os.makedirs(os.path.join(out_dir, "records"), exist_ok=True)
    scoring = scoring_plan(task, args.scoring, args.prompt_style)
    scorers = scoring.scorers
    dataset = load_eval_dataset(args, task, scoring.prompt_style)
    questions = [question_text(p) for p in dataset["prompt"]]
    rows, skipped = [], []
    try:
        for checkpoint in checkpoints:
            result = _sweep_checkpoint(args, load_model, checkpoint, task, scoring, dataset, questions, out_dir,
                                       state)
            if isinstance(result, str):
                skipped.append((checkpoint, result))
                warnings.warn(f"skipping checkpoint {checkpoint}: {result}.", stacklevel=2)
            else:
                rows.extend(result)
    finally:  # what finished is summarised even when a later checkpoint fails
        if state.is_main_process:
            write_summary(rows, list(scorers), out_dir, task.name, skipped)
            print(f"sweep results: {out_dir}/summary.md, summary.csv, accuracy_vs_step.png")
    state.wait_for_everyone()
    return rows


def _sweep_checkpoint(args, load_model, checkpoint, task, scoring, dataset, questions, out_dir, state) -> list | str:
    """The summary rows of one checkpoint at every length, or why it was skipped."""
    rows, scorers = [], scoring.scorers
    name = checkpoint_name(checkpoint)
    paths = {n: os.path.join(out_dir, "records", f"{name}_{n}.jsonl") for n in args.gen_length}
    keys = {n: setup_key(eval_plan(args, task, n, checkpoint, scoring)["setup"]) for n in args.gen_length}
    done = {n: finished_records(paths[n], keys[n], questions) for n in args.gen_length}
    model = tokenizer = None
    if any(len(done[n]) < len(dataset) for n in args.gen_length):
        problem = weights_problem(checkpoint)
        if problem is not None:
            return problem
        try:
            model, tokenizer = load_model(checkpoint, args.trust_remote_code)
        except (OSError, ValueError) as error:  # e.g. a shard of a save cut short
            return f"its model could not be loaded ({error})"
        model = model.to(state.device)
    for gen_length in args.gen_length:
        start = time.time()
        if len(done[gen_length]) == len(dataset):
            records = [done[gen_length][i] for i in range(len(dataset))]
            summary = summarise(records, list(scorers), args.num_generations)
        else:
            summary, _, records = evaluate_model(args, model, tokenizer, dataset, task, gen_length,
                                                 paths[gen_length], checkpoint, scoring, progress=False)
        steps = args.steps_for(gen_length)
        if state.is_main_process:
            write_d1_generations(
                records, os.path.join(out_dir, f"{task.name}_{name}_{gen_length}_{steps}_0_generations.json"),
                model_path=checkpoint, checkpoint_path=checkpoint, gen_length=gen_length, steps=steps,
                block_length=args.block_length, wall_time=time.time() - start,
            )
        row = {"checkpoint": checkpoint, "step": checkpoint_step(checkpoint), "gen_length": gen_length,
               "steps": steps, **{f"accuracy_{s}": summary[f"accuracy_{s}"] for s in scorers},
               "num_examples": summary["num_examples"]}
        rows.append(row)
        if state.is_main_process:
            scores = ", ".join(f"{s} {row[f'accuracy_{s}']:.4f}" for s in scorers)
            print(f"{name} (step {row['step']}) gen_length {gen_length}: {scores}", flush=True)
    del model
    return rows


def write_summary(rows: list[dict], scorings: list[str], out_dir: str, task: str,
                  skipped: list[tuple[str, str]] = ()) -> None:
    """`summary.csv`, `summary.md` (with the best checkpoint per length, and the checkpoints skipped and why) and
    `accuracy_vs_step.png`."""
    columns = ["checkpoint", "step", "gen_length", "steps", *[f"accuracy_{s}" for s in scorings], "num_examples"]
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {task}: accuracy per checkpoint and generation length", "",
             "| " + " | ".join(c if c != "checkpoint" else "checkpoint" for c in columns) + " |",
             "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [os.path.basename(row["checkpoint"]) if c == "checkpoint" else
                 (f"{row[c]:.4f}" if c.startswith("accuracy_") else str(row[c])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for gen_length in sorted({r["gen_length"] for r in rows}):
        best = max((r for r in rows if r["gen_length"] == gen_length), key=lambda r: r[f"accuracy_{scorings[0]}"])
        lines.append(f"- best at gen_length {gen_length} ({scorings[0]} scoring): "
                     f"{os.path.basename(best['checkpoint'])} ({best[f'accuracy_{scorings[0]}']:.4f})")
    for checkpoint, reason in skipped:
        lines.append(f"- skipped {os.path.basename(checkpoint)}: {reason}")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_sweep(rows, scorings, os.path.join(out_dir, "accuracy_vs_step.png"), task)


def plot_sweep(rows: list[dict], scorings: list[str], path: str, task: str) -> None:
    """Accuracy against training step, one colour per length, solid for the first scoring and dashed for the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k, gen_length in enumerate(sorted({r["gen_length"] for r in rows})):
        points = sorted((r for r in rows if r["gen_length"] == gen_length),
                        key=lambda r: (r["step"] is None, r["step"] or 0))
        steps = [r["step"] if r["step"] is not None else i for i, r in enumerate(points)]
        for scoring, style in zip(scorings, ("-", "--")):
            ax.plot(steps, [r[f"accuracy_{scoring}"] for r in points], style, marker="o", color=f"C{k}",
                    label=f"length {gen_length}, {scoring} scoring")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: accuracy vs step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

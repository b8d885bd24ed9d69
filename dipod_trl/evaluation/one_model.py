"""`dipod eval --model`: one model at one or more generation lengths (a checkpoint sweep is `sweep`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..tasks import get_task
from .d1_files import write_d1_generations
from .evaluator import evaluate_model, load_eval_dataset, process_state, scoring_plan
from .records import model_name

if TYPE_CHECKING:  # the options of `dipod eval`, declared in the command layer
    from ..commands.eval_arguments import EvalArguments


def run_evaluation(args: EvalArguments, load_model: Callable) -> dict:
    """`dipod eval --model`: each length's summary, printed; returns the summary (of the last length)."""
    task = get_task(args.task)
    scoring = scoring_plan(task, args.scoring, args.prompt_style)
    dataset = load_eval_dataset(args, task, scoring.prompt_style)
    model, tokenizer = load_model(args.model, args.trust_remote_code)
    model = model.to(process_state().device)
    summary = {}
    for gen_length in args.gen_length:
        start = time.time()
        summary, output, records = evaluate_model(args, model, tokenizer, dataset, task, gen_length, args.output,
                                                  model_name(args.model), scoring)
        if process_state().is_main_process:
            write_d1_generations(records, os.path.splitext(output)[0] + "_generations.json",
                                 model_path=model_name(args.model), checkpoint_path="", gen_length=gen_length,
                                 steps=args.steps_for(gen_length), block_length=args.block_length,
                                 wall_time=time.time() - start)
            scores = ", ".join(f"{name} {summary[f'accuracy_{name}']:.4f}" for name in ("d1", "project")
                               if f"accuracy_{name}" in summary)
            print(f"{args.task} ({args.split}, {summary['num_examples']} examples, gen_length {gen_length}, "
                  f"{scoring.prompt_style} prompts): accuracy {summary['accuracy']:.4f} ({scores}) in "
                  f"{time.time() - start:.0f}s")
            print(f"records: {output} (d1's layout: {os.path.splitext(output)[0]}_generations.json)")
    return summary

"""Task evaluation as the paper does it: batched generation over a test split, scored by the project's rules and by
d1's (the published tables' parser), each example's record kept in the run's record store (`records`).

Under `accelerate launch` the examples are sharded over the processes; sampling uses one generator per example, so
records do not depend on batching or sharding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, NamedTuple

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from ..models import as_diffusion_lm
from ..options import FastDecodingArguments, SamplerArguments
from ..randomness import SEED_STRIDE
from ..sampling import generate
from ..tasks import tokenize_prompt
from .d1_files import d1_subset
from .records import (
    finished_records,
    merge_part_files,
    model_name_of,
    question_text,
    repair_partial_line,
    run_setup,
    setup_key,
    with_fast_decoding,
)

if TYPE_CHECKING:  # the options of `dipod eval`, declared in the command layer
    from ..commands.eval_arguments import EvalArguments


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` started; without CUDA the processes join a gloo group
    (accelerate's CPU launcher needs `cpu=True` for that)."""
    return PartialState(cpu=not torch.cuda.is_available())


# ---------------------------------------------------------------------------------------------------------------------
# Evaluating one model at one setting
# ---------------------------------------------------------------------------------------------------------------------


def _generate_batch(lm, model, tokenizer, rows, indices, *, num_generations, seed, gen_length, steps, sampler, fast):
    """Completions of a batch of rows: `(clean texts, raw texts, prompt texts)`, `num_generations` per row.

    Clean text stops at the first EOS without special tokens (the project's scoring); raw text is the whole canvas
    with special tokens, as d1's evaluation decodes it (d1's Sudoku patterns look for them).
    """
    device = next(model.parameters()).device
    prompts = [row["prompt"] for row in rows for _ in range(num_generations)]
    ids = [torch.tensor(tokenize_prompt(tokenizer, p)) for p in prompts]
    prompt_ids = pad(ids, tokenizer.pad_token_id, "left")
    attention = pad([torch.ones_like(x) for x in ids], 0, "left")
    # One generator per completion (on the model's device: Gumbel noise is as large as the logits), seeded by example
    # and generation: a record is the same whatever the batch or process.
    generators = [torch.Generator(device).manual_seed(seed * SEED_STRIDE + index * num_generations + g)
                  for index in indices for g in range(num_generations)]
    with torch.no_grad():
        completion_ids, completion_mask = generate(
            lm, prompt_ids.to(device), attention.to(device), gen_length=gen_length, steps=steps,
            **sampler.sampler_options(), generator=generators, **(fast.fast_decoding() if fast else {}),
        )
    completion_ids, completion_mask = completion_ids.cpu(), completion_mask.cpu()
    clean = tokenizer.batch_decode([c[m.bool()] for c, m in zip(completion_ids, completion_mask)],
                                   skip_special_tokens=True)
    raw = tokenizer.batch_decode(completion_ids, skip_special_tokens=False)
    prompt_texts = tokenizer.batch_decode(ids, skip_special_tokens=False)
    return clean, raw, prompt_texts


def _score_batch(rows, indices, clean, raw, prompt_texts, scorers, weights, d1_record, num_generations, base):
    """The records of a generated batch: each row's completions scored by every scorer (d1's reads the raw canvas
    text, as d1's evaluation decodes it; the project's the clean completion)."""
    columns = [c for c in rows[0] if c != "prompt"]
    prompts = [row["prompt"] for row in rows for _ in range(num_generations)]
    kwargs = {c: [row[c] for row in rows for _ in range(num_generations)] for c in columns}
    scores = {name: [float(s) for s in f(prompts=prompts, completions=raw if name == "d1" else clean, **kwargs)]
              for name, f in scorers.items()}
    records = []
    for k, (index, row) in enumerate(zip(indices, rows)):
        span = slice(k * num_generations, (k + 1) * num_generations)
        record = {
            "index": index, **base, "prompt_input": prompt_texts[k * num_generations], "generations": clean[span],
            "raw_generations": raw[span], "ground_truth": {c: row[c] for c in columns},
            "scores": {name: s[span] for name, s in scores.items()},
            "weights": {name: float(w(row)) for name, w in weights.items()},
        }
        if d1_record is not None:
            question, truth = d1_record(row)
            record["d1"] = {"question": question, "ground_truth": truth}
        records.append(record)
    return records


def summarise(records: list[dict], scorings: list[str], num_generations: int) -> dict:
    summary = {"num_examples": len(records), "num_generations": num_generations}
    for name in scorings:
        total = weight = 0.0
        for record in records:
            w = record.get("weights", {}).get(name, 1.0)
            total += w * sum(record["scores"][name])
            weight += w * len(record["scores"][name])
        summary[f"accuracy_{name}"] = total / weight if weight else 0.0
    summary["accuracy"] = summary[f"accuracy_{scorings[0]}"]
    return summary


def evaluate_task(model, tokenizer, dataset, scorers: Callable | dict[str, Callable], **kwargs) -> dict:
    """Generate for every example of `dataset` and score; returns the summary (see `evaluate_records`)."""
    return evaluate_records(model, tokenizer, dataset, scorers, **kwargs)[0]


def evaluate_records(
    model,
    tokenizer,
    dataset,
    scorers: Callable | dict[str, Callable],
    *,
    gen_length: int,
    steps: int,
    sampler: SamplerArguments | None = None,
    fast: FastDecodingArguments | None = None,
    num_generations: int = 1,
    batch_size: int = 16,
    output_path: str | None = None,
    seed: int = 0,
    progress: bool = True,
    run: dict | None = None,
    weights: dict[str, Callable[[dict], float]] | None = None,
    d1_record: Callable[[dict], tuple] | None = None,
    model_name: str | None = None,
) -> tuple[dict, list[dict]]:
    """Generate for every example of `dataset` and score; returns the summary and the records in dataset order.

    `scorers` is one reward function (reported as `project`) or several by name (`{"project": ..., "d1": ...}`);
    the summary has `accuracy_<name>` for each, and `accuracy` for the first. `weights[name](row)` weighs a row in
    that scoring's mean (d1's Sudoku: its empty cells). `run` adds to the setup that identifies reusable records
    (task, split, prompt layout...); the model's path or hub id, the sampler settings and the seed are always in it.
    `d1_record(row)` gives `(question, ground_truth)` as d1's files write them, stored for `write_d1_generations`.
    `model_name` names the model in the setup (default: its directory or hub id; an adapter checkpoint needs its own).
    The sampler's options come as groups: `sampler` (block length, temperature, remasking, guidance; default: greedy
    `SamplerArguments()`) and `fast` (`FastDecodingArguments`: kv_cache, cache_refresh_steps, confidence_threshold;
    None decodes exactly), both checked when built; they go to `generate` and into the setup (fast decoding only when
    on). `EvalArguments` is both groups: `sampler=args, fast=args`.
    """
    sampler = sampler if sampler is not None else SamplerArguments()
    run = with_fast_decoding(run, fast.fast_decoding() if fast else None)
    if batch_size < 1 or num_generations < 1:
        raise ValueError(f"batch_size and num_generations must be at least 1, got {batch_size} and {num_generations}.")
    scorers = {"project": scorers} if callable(scorers) else dict(scorers)
    weights = weights or {}
    state = process_state()
    lm = as_diffusion_lm(model, tokenizer)
    setup = run_setup(model_name or model_name_of(model), gen_length=gen_length, steps=steps, sampler=sampler,
                      num_generations=num_generations, seed=seed, scorings=list(scorers), run=run)
    key = setup_key(setup)
    questions = [question_text(p) for p in dataset["prompt"]]
    records = finished_records(output_path, key, questions) if output_path else {}
    todo = [i for i in range(len(dataset)) if i not in records][state.process_index :: state.num_processes]
    if state.num_processes > 1:
        # The finished records include unmerged part files: every process must read them before any process
        # writes, or a process that starts later takes another's fresh records for finished ones and shares out
        # the rest differently.
        state.wait_for_everyone()
    with _record_file(output_path, state) as out:
        starts = range(0, len(todo), batch_size)
        for start in tqdm(starts, desc="evaluating", disable=not progress or not state.is_main_process):
            indices = todo[start : start + batch_size]
            rows = [dataset[i] for i in indices]
            clean, raw, prompt_texts = _generate_batch(
                lm, model, tokenizer, rows, indices, num_generations=num_generations, seed=seed, gen_length=gen_length,
                steps=steps, sampler=sampler, fast=fast,
            )
            for record in _score_batch(rows, indices, clean, raw, prompt_texts, scorers, weights, d1_record,
                                       num_generations, base={"setup_key": key, "setup": setup}):
                record["question"] = questions[record["index"]]
                records[record["index"]] = record
                if out:
                    out.write(json.dumps(record) + "\n")
            if out:
                out.flush()
    if state.num_processes > 1:
        records = _gather_records(records, output_path, state)
    missing = sorted(set(range(len(dataset))) - set(records))
    if missing:
        raise RuntimeError(f"evaluation: no record for examples {missing[:10]} ({len(missing)} in all); rerun to "
                           "generate them (finished records are reused).")
    ordered = [records[i] for i in sorted(records)]
    summary = summarise(ordered, list(scorers), num_generations)
    if output_path and state.is_main_process:
        with open(os.path.splitext(output_path)[0] + "_summary.json", "w") as f:
            json.dump({**summary, "setup": setup}, f, indent=2)
    return summary, ordered


def _record_file(output_path: str | None, state):
    """The JSONL file this process appends its records to (its own part file when several processes share the run),
    its half-written last line repaired; a null context without `output_path`."""
    if not output_path:
        return nullcontext()
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    write_path = output_path if state.num_processes == 1 else f"{output_path}.part{state.process_index}"
    repair_partial_line(write_path)
    return open(write_path, "a")


def _gather_records(records: dict, output_path: str | None, state) -> dict:
    """Every process's records, on every process; the part files merged into `output_path` for resuming."""
    from accelerate.utils import gather_object

    # The records travel with the collective itself, so the summary never depends on when another process's part
    # file becomes readable; the files are merged only for resuming.
    records = {r["index"]: r for r in gather_object(list(records.values()))}
    if output_path:
        state.wait_for_everyone()
        if state.is_main_process:
            merge_part_files(output_path)
        state.wait_for_everyone()
    return records


# ---------------------------------------------------------------------------------------------------------------------
# `dipod eval`
# ---------------------------------------------------------------------------------------------------------------------


class ScoringPlan(NamedTuple):
    """How a run scores: the scorers by name, the per-row weights of a scoring, the prompt layout."""

    scorers: dict[str, Callable]
    weights: dict[str, Callable[[dict], float]]
    prompt_style: str


def scoring_plan(task, scoring: str, prompt_style: str | None) -> ScoringPlan:
    """The scorers, weights and prompt layout of a task under `--scoring` (d1's scoring where the task has it)."""
    has_d1 = task.d1_accuracy is not None
    if scoring == "d1" and not has_d1:
        raise ValueError(f"scoring: {task.name} has no d1 scoring (d1 did not evaluate it); use --scoring project.")
    names = {"both": ["project", "d1"] if has_d1 else ["project"], "d1": ["d1"], "project": ["project"]}[scoring]
    scorers = {name: task.accuracy if name == "project" else task.d1_accuracy for name in names}
    weights = {"d1": task.d1_weight} if "d1" in names and task.d1_weight is not None else {}
    style = prompt_style or ("d1_eval" if "d1" in names else "project")
    return ScoringPlan(scorers, weights, style)


def default_output(model: str, task: str, split: str, key: str) -> str:
    folder = os.path.join(model, "eval") if os.path.isdir(model) else os.path.join("eval", model.replace("/", "__"))
    return os.path.join(folder, f"{task}_{split}_{key}.jsonl")


def evaluate_model(args: EvalArguments, model, tokenizer, dataset, task, gen_length: int, output: str | None,
                   model_name: str, scoring: ScoringPlan, progress: bool = True) -> tuple[dict, str, list[dict]]:
    """One model at one length, scored by the run's `scoring_plan`: `(summary, records file, records in dataset
    order)`."""
    plan = eval_plan(args, task, gen_length, model_name, scoring)
    output = output or default_output(model_name, task.name, args.split, setup_key(plan["setup"]))
    summary, records = evaluate_records(
        model, tokenizer, dataset, scoring.scorers, gen_length=gen_length, steps=args.steps_for(gen_length),
        sampler=args, fast=args, num_generations=args.num_generations, batch_size=args.batch_size, output_path=output,
        seed=args.seed, progress=progress, run=plan["run"], weights=scoring.weights, d1_record=task.d1_record,
        model_name=model_name,
    )
    return summary, output, records


def eval_plan(args: EvalArguments, task, gen_length: int, model_name: str, scoring: ScoringPlan | None = None) -> dict:
    """The `run` part and the whole setup of `dipod eval` for one model and length (`scoring`: the run's
    `scoring_plan`, computed here when not given)."""
    scoring = scoring or scoring_plan(task, args.scoring, args.prompt_style)
    run = {"task": task.name, "split": args.split, "dataset_source": args.dataset_source,
           "prompt_style": scoring.prompt_style,
           "few_shot": args.few_shot, "d1_subset": args.d1_subset}
    run = with_fast_decoding(run, args.fast_decoding())
    if args.dtype != "auto":  # records of another precision are another run's; `auto` keeps the setup it always had
        run = {**run, "dtype": args.dtype}
    setup = run_setup(model_name, gen_length=gen_length, steps=args.steps_for(gen_length), sampler=args,
                      num_generations=args.num_generations, seed=args.seed, scorings=list(scoring.scorers), run=run)
    return {"run": run, "setup": setup}


def load_eval_dataset(args: EvalArguments, task, prompt_style: str):
    from ..tasks import load_task

    dataset = load_task(task.name, args.dataset_source, args.split, prompt_style=prompt_style, few_shot=args.few_shot)
    if args.d1_subset:
        dataset = d1_subset(dataset, task.name)
    return dataset if args.num_examples is None else dataset.select(range(min(args.num_examples, len(dataset))))

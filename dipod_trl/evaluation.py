"""Task evaluation as the paper does it: batched generation over a test split, scored by the project's rules and by
d1's (the published tables' parser), with records that are reused only by the run that wrote them.

Each example's record (question, generations, ground truth, scores) is appended to a JSON-lines file as soon as its
batch is done. A record carries its run's setup (model, task, split, prompt layout, sampler settings, seed) and its
example index and question; an evaluation reuses exactly the records of its own setup and examples, so an interrupted
run resumes without redoing work, while another model, other sampler settings or another dataset never borrow its
results. Under `accelerate launch` the examples are sharded over the processes (each writes a part file, the main
process merges them); sampling uses one generator per example, so records do not depend on batching or sharding.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from .finite import check_finite_fields
from .models.adapters import as_diffusion_lm
from .sampling import FAST_DECODING_HELP, generate, validate_fast_decoding
from .tasks import PROMPT_STYLES, tokenize_prompt

SCORINGS = ("both", "d1", "project")


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` started; without CUDA the processes join a gloo group
    (accelerate's CPU launcher needs `cpu=True` for that)."""
    return PartialState(cpu=not torch.cuda.is_available())


@dataclass
class EvalArguments:
    """Arguments of `dipod eval`: one model (`--model`) or a checkpoint sweep (`--checkpoints`)."""

    task: str = field(metadata={"help": "Task to evaluate: gsm8k, math500, countdown, sudoku or digit_sort."})
    model: str | None = field(
        default=None, metadata={"help": "Model directory or hub id (LLaDA and Dream load without remote code)."}
    )
    checkpoints: list[str] | None = field(
        default=None,
        metadata={"help": "Checkpoint directories to sweep (e.g. DIR/checkpoint-*, globs are expanded): each is "
                  "evaluated at every --gen_length; writes d1's JSON files, a summary table and a plot."},
    )
    dataset_source: str | None = field(default=None, metadata={"help": "Hub id or local file; default: the task's."})
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate."})
    num_examples: int | None = field(default=None, metadata={"help": "Evaluate only the first N examples."})
    scoring: str = field(
        default="both",
        metadata={"help": "`project` (the project's strict rules), `d1` (d1's evaluation parser, as the published "
                  "tables) or `both`."},
    )
    prompt_style: str | None = field(
        default=None,
        metadata={"help": f"Prompt layout, one of {PROMPT_STYLES}. Default: d1's evaluation prompts (`d1_eval`) when "
                  "d1 scoring is asked for and the task has it, else `project`."},
    )
    few_shot: int = field(default=0, metadata={"help": "Worked examples before each question (Sudoku: up to 3)."})
    d1_subset: bool = field(
        default=False,
        metadata={"help": "Evaluate the examples d1's evaluation draws: 256 rows of the Countdown and Sudoku test "
                  "files (NumPy's seed 42, as d1's `subsample`; give d1's files as --dataset_source), all of GSM8K "
                  "and MATH-500."},
    )
    gen_length: list[int] = field(
        default_factory=lambda: [256], metadata={"help": "Completion length(s), the generation canvas."}
    )
    block_length: int = field(default=32, metadata={"help": "Semi-autoregressive block length."})
    steps: int | None = field(
        default=None, metadata={"help": "Denoising steps per completion; default: gen_length / 2 (d1's evaluation)."}
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy (the paper's eval)."})
    remasking: str = field(default="low_confidence", metadata={"help": "Remasking rule of the sampler."})
    num_generations: int = field(default=1, metadata={"help": "Generations per question (accuracy averages them)."})
    batch_size: int = field(default=16, metadata={"help": "Questions generated per batch (per process)."})
    output: str | None = field(
        default=None,
        metadata={"help": "JSON-lines file of records (one model). Default: <model dir>/eval/<task>_<split>_<setup>"
                  ".jsonl, or ./eval/<hub id>/... for a hub model; <setup> is a hash of the settings."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of a sweep's results; default: <checkpoints' folder>/eval_<task>."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampler's generators (matters when temperature > 0)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship modeling code."})
    kv_cache: str | None = field(default=None, metadata={"help": FAST_DECODING_HELP["kv_cache"]})
    cache_refresh_steps: int | None = field(default=None, metadata={"help": FAST_DECODING_HELP["cache_refresh_steps"]})
    confidence_threshold: float | None = field(
        default=None, metadata={"help": FAST_DECODING_HELP["confidence_threshold"]}
    )

    def __post_init__(self):
        check_finite_fields(self)
        validate_fast_decoding(**fast_decoding_of(self))
        if isinstance(self.gen_length, int):
            self.gen_length = [self.gen_length]
        for name in ("batch_size", "num_generations", "block_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}; e.g. --{name} 1.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}; or leave it out for gen_length / 2.")
        if not self.gen_length or min(self.gen_length) < 1:
            raise ValueError(f"gen_length must be one or more positive lengths, got {self.gen_length}.")
        if self.num_examples is not None and self.num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {self.num_examples}; leave it out for all.")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}.")
        if (self.model is None) == (not self.checkpoints):
            raise ValueError("give either --model (one model) or --checkpoints (a sweep), not both or neither.")
        if self.checkpoints and self.output is not None:
            raise ValueError("--output names one model's records file; a sweep writes under --output_dir.")
        if self.model is not None and self.output_dir is not None:
            raise ValueError("--output_dir is the folder of a --checkpoints sweep; for one model use --output FILE.")
        if self.model is not None and len(self.gen_length) > 1 and self.output is not None:
            raise ValueError("--output names one file; with several --gen_length leave it out (one file per length).")

    def steps_for(self, gen_length: int) -> int:
        return self.steps if self.steps is not None else max(gen_length // 2, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------------


def fast_decoding_of(args) -> dict:
    """The fast-decoding options of `args` (all None: exact decoding)."""
    return {name: getattr(args, name) for name in ("kv_cache", "cache_refresh_steps", "confidence_threshold")}


def _with_fast_decoding(run: dict | None, fast_decoding: dict | None) -> dict | None:
    """The run's setup plus the fast-decoding options that are on: records of fast and exact decoding never mix,
    while exact decoding keeps the setup (and records) it always had."""
    on = {name: value for name, value in (fast_decoding or {}).items() if value is not None}
    return {**(run or {}), **on} if on else run


def model_id(model) -> str:
    """How a record names its model: the absolute path of a local directory, else the hub id."""
    name = str(getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", ""))
    return os.path.abspath(name) if name and os.path.isdir(name) else name


def setup_key(setup: dict) -> str:
    """A short stable hash of a run's setup (the file name's tag, and the test of which records belong to a run)."""
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def repair_partial_line(path: str) -> None:
    """Cut a last line that an interruption left without its newline, so the next record starts on a line of its own."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_records(path: str, key: str) -> dict[int, dict]:
    """Whole records of the run `key` in `path` and its unmerged part files, by example index."""
    records = {}
    for name in [path, *sorted(glob.glob(glob.escape(path) + ".part*"))]:
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for number, line in enumerate(f, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by an interruption: redone
                if isinstance(record, dict) and record.get("setup_key") == key:
                    index = record.get("index")
                    if not isinstance(index, int) or isinstance(index, bool):
                        raise ValueError(
                            f"{name}, line {number}: a record of this run has index={index!r}, not an example "
                            "number; the file was edited or written by another program. Delete that line (its "
                            "example is then evaluated again) or the file."
                        )
                    records[index] = record
    return records


def run_setup(model_name: str, *, gen_length, block_length, steps, temperature, remasking, num_generations, seed,
              scorings, run: dict | None = None) -> dict:
    """What identifies a run's records: the model, the sampler settings, the seed, the scorings, and `run` (task,
    split, prompt layout...)."""
    return {"model": model_name, "gen_length": gen_length, "block_length": block_length, "steps": steps,
            "temperature": temperature, "remasking": remasking, "num_generations": num_generations, "seed": seed,
            "scorings": sorted(scorings), **(run or {})}


def finished_records(path: str, key: str, questions: list[str]) -> dict[int, dict]:
    """The records of run `key` for these examples: index in range and the same question."""
    return {i: r for i, r in read_records(path, key).items() if i < len(questions) and r["question"] == questions[i]}


def _merge_parts(path: str) -> None:
    """Append the processes' part files to the main file and remove them (main process only)."""
    parts = sorted(glob.glob(glob.escape(path) + ".part*"))
    if not parts:
        return
    repair_partial_line(path)
    with open(path, "a") as out:
        for part in parts:
            repair_partial_line(part)
            with open(part) as f:
                out.write(f.read())
    for part in parts:
        os.remove(part)


def _question_text(prompt) -> str:
    """The last user message of a conversational prompt (a prefilled answer opening follows it), or the text."""
    if isinstance(prompt, list):
        return next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    return prompt


# ---------------------------------------------------------------------------------------------------------------------
# Evaluating one model at one setting
# ---------------------------------------------------------------------------------------------------------------------


def _generate_batch(lm, model, tokenizer, rows, indices, *, num_generations, seed, gen_length, block_length, steps,
                    temperature, remasking, fast_decoding):
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
    generators = [torch.Generator(device).manual_seed(seed * 1_000_003 + index * num_generations + g)
                  for index in indices for g in range(num_generations)]
    with torch.no_grad():
        completion_ids, completion_mask = generate(
            lm, prompt_ids.to(device), attention.to(device), gen_length=gen_length, block_length=block_length,
            steps=steps, temperature=temperature, remasking=remasking, generator=generators, **fast_decoding,
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


def _summarise(records: list[dict], scorings: list[str], num_generations: int) -> dict:
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
    block_length: int,
    steps: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    num_generations: int = 1,
    batch_size: int = 16,
    output_path: str | None = None,
    seed: int = 0,
    progress: bool = True,
    run: dict | None = None,
    weights: dict[str, Callable[[dict], float]] | None = None,
    d1_record: Callable[[dict], tuple] | None = None,
    model_name: str | None = None,
    fast_decoding: dict | None = None,
) -> tuple[dict, list[dict]]:
    """Generate for every example of `dataset` and score; returns the summary and the records in dataset order.

    `scorers` is one reward function (reported as `project`) or several by name (`{"project": ..., "d1": ...}`);
    the summary has `accuracy_<name>` for each, and `accuracy` for the first. `weights[name](row)` weighs a row in
    that scoring's mean (d1's Sudoku: its empty cells). `run` adds to the setup that identifies reusable records
    (task, split, prompt layout...); the model's path or hub id, the sampler settings and the seed are always in it.
    `d1_record(row)` gives `(question, ground_truth)` as d1's files write them, stored for `write_d1_generations`.
    `model_name` names the model in the setup (default: its directory or hub id; an adapter checkpoint needs its own).
    `fast_decoding` (`kv_cache`, `cache_refresh_steps`, `confidence_threshold`) goes to `generate` and, when on, into
    the setup.
    """
    run = _with_fast_decoding(run, fast_decoding)
    if batch_size < 1 or num_generations < 1:
        raise ValueError(f"batch_size and num_generations must be at least 1, got {batch_size} and {num_generations}.")
    scorers = {"project": scorers} if callable(scorers) else dict(scorers)
    weights = weights or {}
    state = process_state()
    lm = as_diffusion_lm(model, tokenizer)
    setup = run_setup(model_name or model_id(model), gen_length=gen_length, block_length=block_length, steps=steps,
                      temperature=temperature, remasking=remasking, num_generations=num_generations, seed=seed,
                      scorings=list(scorers), run=run)
    key = setup_key(setup)
    questions = [_question_text(p) for p in dataset["prompt"]]
    records = finished_records(output_path, key, questions) if output_path else {}
    todo = [i for i in range(len(dataset)) if i not in records][state.process_index :: state.num_processes]
    if state.num_processes > 1:
        # The finished records include unmerged part files: every process must read them before any process
        # writes, or a process that starts later takes another's fresh records for finished ones and shares out
        # the rest differently.
        state.wait_for_everyone()
    write_path = None
    if output_path:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        write_path = output_path if state.num_processes == 1 else f"{output_path}.part{state.process_index}"
        repair_partial_line(write_path)
    out = open(write_path, "a") if write_path else None
    try:
        starts = range(0, len(todo), batch_size)
        for start in tqdm(starts, desc="evaluating", disable=not progress or not state.is_main_process):
            indices = todo[start : start + batch_size]
            rows = [dataset[i] for i in indices]
            clean, raw, prompt_texts = _generate_batch(
                lm, model, tokenizer, rows, indices, num_generations=num_generations, seed=seed, gen_length=gen_length,
                block_length=block_length, steps=steps, temperature=temperature, remasking=remasking,
                fast_decoding=fast_decoding or {},
            )
            for record in _score_batch(rows, indices, clean, raw, prompt_texts, scorers, weights, d1_record,
                                       num_generations, base={"setup_key": key, "setup": setup}):
                record["question"] = questions[record["index"]]
                records[record["index"]] = record
                if out:
                    out.write(json.dumps(record) + "\n")
            if out:
                out.flush()
    finally:
        if out:
            out.close()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        # The records travel with the collective itself, so the summary never depends on when another process's
        # part file becomes readable; the files are merged only for resuming.
        records = {r["index"]: r for r in gather_object(list(records.values()))}
        if output_path:
            state.wait_for_everyone()
            if state.is_main_process:
                _merge_parts(output_path)
            state.wait_for_everyone()
    missing = sorted(set(range(len(dataset))) - set(records))
    if missing:
        raise RuntimeError(f"evaluation: no record for examples {missing[:10]} ({len(missing)} in all); rerun to "
                           "generate them (finished records are reused).")
    ordered = [records[i] for i in sorted(records)]
    summary = _summarise(ordered, list(scorers), num_generations)
    if output_path and state.is_main_process:
        with open(os.path.splitext(output_path)[0] + "_summary.json", "w") as f:
            json.dump({**summary, "setup": setup}, f, indent=2)
    return summary, ordered


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


# ---------------------------------------------------------------------------------------------------------------------
# `dipod eval`
# ---------------------------------------------------------------------------------------------------------------------


def scoring_plan(task, scoring: str, prompt_style: str | None) -> tuple[dict, dict, str]:
    """`(scorers, weights, prompt_style)` of a task under `--scoring` (d1's scoring where the task has it)."""
    has_d1 = task.d1_accuracy is not None
    if scoring == "d1" and not has_d1:
        raise ValueError(f"scoring: {task.name} has no d1 scoring (d1 did not evaluate it); use --scoring project.")
    names = {"both": ["project", "d1"] if has_d1 else ["project"], "d1": ["d1"], "project": ["project"]}[scoring]
    scorers = {name: task.accuracy if name == "project" else task.d1_accuracy for name in names}
    weights = {"d1": task.d1_weight} if "d1" in names and task.d1_weight is not None else {}
    style = prompt_style or ("d1_eval" if "d1" in names else "project")
    return scorers, weights, style


def default_output(model: str, task: str, split: str, key: str) -> str:
    folder = os.path.join(model, "eval") if os.path.isdir(model) else os.path.join("eval", model.replace("/", "__"))
    return os.path.join(folder, f"{task}_{split}_{key}.jsonl")


def evaluate_model(args: EvalArguments, model, tokenizer, dataset, task, gen_length: int, output: str | None,
                   model_name: str, progress: bool = True) -> tuple[dict, str, list[dict]]:
    """One model at one length: `(summary, records file, records in dataset order)`."""
    scorers, weights, style = scoring_plan(task, args.scoring, args.prompt_style)
    plan = eval_plan(args, task, gen_length, model_name)
    output = output or default_output(model_name, task.name, args.split, setup_key(plan["setup"]))
    summary, records = evaluate_records(
        model, tokenizer, dataset, scorers, gen_length=gen_length, block_length=args.block_length,
        steps=args.steps_for(gen_length), temperature=args.temperature, remasking=args.remasking,
        num_generations=args.num_generations, batch_size=args.batch_size, output_path=output, seed=args.seed,
        progress=progress, run=plan["run"], weights=weights, d1_record=task.d1_record, model_name=model_name,
        fast_decoding=fast_decoding_of(args),
    )
    return summary, output, records


def eval_plan(args: EvalArguments, task, gen_length: int, model_name: str) -> dict:
    """The `run` part and the whole setup of `dipod eval` for one model and length."""
    scorers, _, style = scoring_plan(task, args.scoring, args.prompt_style)
    run = {"task": task.name, "split": args.split, "dataset_source": args.dataset_source, "prompt_style": style,
           "few_shot": args.few_shot, "d1_subset": args.d1_subset}
    run = _with_fast_decoding(run, fast_decoding_of(args))
    setup = run_setup(model_name, gen_length=gen_length, block_length=args.block_length,
                      steps=args.steps_for(gen_length), temperature=args.temperature, remasking=args.remasking,
                      num_generations=args.num_generations, seed=args.seed, scorings=list(scorers), run=run)
    return {"run": run, "setup": setup}


def local_name(model: str) -> str:
    """A model argument as records name it: the absolute path of a local directory, else the hub id."""
    return os.path.abspath(model) if os.path.isdir(model) else model


def load_eval_dataset(args: EvalArguments, task, prompt_style: str):
    from .tasks import load_task

    dataset = load_task(task.name, args.dataset_source, args.split, prompt_style=prompt_style, few_shot=args.few_shot)
    if args.d1_subset:
        dataset = d1_subset(dataset, task.name)
    return dataset if args.num_examples is None else dataset.select(range(min(args.num_examples, len(dataset))))


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


def run_evaluation(args: EvalArguments, load_model: Callable) -> dict:
    """`dipod eval --model`: each length's summary, printed; returns the summary (of the last length)."""
    from .tasks import get_task

    task = get_task(args.task)
    _, _, style = scoring_plan(task, args.scoring, args.prompt_style)
    dataset = load_eval_dataset(args, task, style)
    model, tokenizer = load_model(args.model, args.trust_remote_code)
    model = model.to(process_state().device)
    summary = {}
    for gen_length in args.gen_length:
        start = time.time()
        summary, output, records = evaluate_model(args, model, tokenizer, dataset, task, gen_length, args.output,
                                                  local_name(args.model))
        if process_state().is_main_process:
            write_d1_generations(records, os.path.splitext(output)[0] + "_generations.json",
                                 model_path=local_name(args.model), checkpoint_path="", gen_length=gen_length,
                                 steps=args.steps_for(gen_length), block_length=args.block_length,
                                 wall_time=time.time() - start)
            scores = ", ".join(f"{name} {summary[f'accuracy_{name}']:.4f}" for name in ("d1", "project")
                               if f"accuracy_{name}" in summary)
            print(f"{args.task} ({args.split}, {summary['num_examples']} examples, gen_length {gen_length}, "
                  f"{style} prompts): accuracy {summary['accuracy']:.4f} ({scores}) in {time.time() - start:.0f}s")
            print(f"records: {output} (d1's layout: {os.path.splitext(output)[0]}_generations.json)")
    return summary

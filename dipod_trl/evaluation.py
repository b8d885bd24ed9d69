"""Task evaluation as the paper does it: batched generation over a test split, accuracy through the task's reward.

Each example's record (question, generations, ground truth, scores) is appended to a JSON-lines file as soon as its
batch is done, so an interrupted evaluation resumes without redoing finished records; the summary is written next to
it when every example is scored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from .data import tokenize_prompt
from .models.adapters import as_diffusion_lm
from .sampling import generate

# The accuracy reward of each task, by name in `reward_models` (imported lazily).
TASK_REWARDS = {
    "gsm8k": "gsm8k_accuracy",
    "math500": "math500_accuracy",
    "countdown": "countdown_accuracy",
    "sudoku": "sudoku_accuracy",
    "digit_sort": "exact_match_accuracy",
}


def task_reward(task: str):
    """The accuracy reward function of `task`."""
    import reward_models

    if task not in TASK_REWARDS:
        raise ValueError(f"task: unknown task {task!r}; expected one of {sorted(TASK_REWARDS)}.")
    return getattr(reward_models, TASK_REWARDS[task])


@dataclass
class EvalArguments:
    """Arguments of `dipod eval`."""

    model: str = field(metadata={"help": "Model directory or hub id (LLaDA/Dream need --trust_remote_code)."})
    task: str = field(metadata={"help": f"Task to evaluate: one of {sorted(TASK_REWARDS)}."})
    dataset_source: str | None = field(default=None, metadata={"help": "Hub id or local file; default: the task's."})
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate."})
    num_examples: int | None = field(default=None, metadata={"help": "Evaluate only the first N examples."})
    gen_length: int = field(default=256, metadata={"help": "Completion length (the generation canvas)."})
    block_length: int = field(default=32, metadata={"help": "Semi-autoregressive block length."})
    steps: int = field(default=128, metadata={"help": "Denoising steps per completion."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy (the paper's eval)."})
    remasking: str = field(default="low_confidence", metadata={"help": "Remasking rule of the sampler."})
    num_generations: int = field(default=1, metadata={"help": "Generations per question (accuracy averages them)."})
    batch_size: int = field(default=16, metadata={"help": "Questions generated per batch."})
    output: str | None = field(
        default=None, metadata={"help": "JSON-lines file of records; default: <model>/eval_<task>_<split>.jsonl."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampler's generator (matters when temperature > 0)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship modeling code."})


def _question_text(prompt) -> str:
    return prompt[-1]["content"] if isinstance(prompt, list) else prompt


def _read_records(path: str) -> dict[int, dict]:
    """Finished records by example index; a line cut off by an interruption is ignored (and redone)."""
    records = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                records[record["index"]] = record
    return records


def evaluate_task(
    model,
    tokenizer,
    dataset,
    reward_func,
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
    **fast_decoding,
) -> dict:
    """Generate for every example of `dataset` and score with `reward_func`; returns the summary.

    `dataset` has a `prompt` column and the columns `reward_func` reads. With `output_path`, records already in the
    file are kept and skipped (records are written batch by batch). Sampling uses a generator seeded with
    `seed + batch index`, so with greedy decoding a resumed run writes exactly the records of an uninterrupted one.
    `fast_decoding` (`kv_cache`, `cache_refresh_steps`, `confidence_threshold`) goes to `generate`.
    """
    lm = as_diffusion_lm(model, tokenizer)
    device = next(model.parameters()).device
    records = _read_records(output_path) if output_path else {}
    columns = [c for c in dataset.column_names if c != "prompt"]
    todo = {i for i in range(len(dataset)) if i not in records}
    if output_path and records:
        # Rewrite the finished records only, so that a line cut off by the interruption does not stay in the file.
        with open(output_path + ".tmp", "w") as f:
            f.writelines(json.dumps(records[i]) + "\n" for i in sorted(records))
        os.replace(output_path + ".tmp", output_path)
    out = open(output_path, "a") if output_path else None
    try:
        starts = range(0, len(dataset), batch_size)
        for batch_index, start in enumerate(tqdm(starts, desc="evaluating", disable=not progress)):
            indices = [i for i in range(start, min(start + batch_size, len(dataset))) if i in todo]
            if not indices:
                continue
            rows = [dataset[i] for i in indices]
            prompts = [row["prompt"] for row in rows for _ in range(num_generations)]
            ids = [torch.tensor(tokenize_prompt(tokenizer, p)) for p in prompts]
            prompt_ids = pad(ids, tokenizer.pad_token_id, "left")
            attention = pad([torch.ones_like(x) for x in ids], 0, "left")
            generator = torch.Generator().manual_seed(seed + batch_index)
            with torch.no_grad():
                completion_ids, completion_mask = generate(
                    lm, prompt_ids.to(device), attention.to(device), gen_length=gen_length,
                    block_length=block_length, steps=steps, temperature=temperature, remasking=remasking,
                    generator=generator, **fast_decoding,
                )
            texts = tokenizer.batch_decode(
                [c[m.bool()] for c, m in zip(completion_ids.cpu(), completion_mask.cpu())], skip_special_tokens=True
            )
            kwargs = {c: [row[c] for row in rows for _ in range(num_generations)] for c in columns}
            scores = reward_func(prompts=prompts, completions=texts, **kwargs)
            for k, (index, row) in enumerate(zip(indices, rows)):
                span = slice(k * num_generations, (k + 1) * num_generations)
                record = {
                    "index": index,
                    "question": _question_text(row["prompt"]),
                    "generations": texts[span],
                    "ground_truth": {c: row[c] for c in columns},
                    "scores": scores[span],
                }
                records[index] = record
                if out:
                    out.write(json.dumps(record) + "\n")
            if out:
                out.flush()
    finally:
        if out:
            out.close()
    scores = [s for record in records.values() for s in record["scores"]]
    summary = {"accuracy": sum(scores) / len(scores) if scores else 0.0, "num_examples": len(records),
               "num_generations": num_generations}
    if output_path:
        with open(os.path.splitext(output_path)[0] + "_summary.json", "w") as f:
            json.dump(summary, f, indent=2)
    return summary

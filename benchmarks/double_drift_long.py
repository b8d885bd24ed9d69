"""The drift sweep of `double_drift.py` on the long task: 64-token completions in 4 blocks of 16.

    python benchmarks/double_drift_long.py                                  # the grid below, seed-major, 1 worker
    python benchmarks/double_drift_long.py --summarise-only                 # table, CSV and PNG of what has finished
    python benchmarks/double_drift_long.py --probe 1e-4 3e-4 1e-3 --seeds 99 --drift-every 1   # the learning-rate probe

Task (`_long_sort.py`): sort 32 digits, answer spaced out (63 characters and EOS), reward = per-character accuracy of
completions sampled at T=1; every run starts from its 400-step masked-SFT checkpoint. Settings shared by all runs:
32 completions (4 prompts x 8) per generation batch, 32 diffusion steps, `dipod_normalization="token"`, constant
learning rate, the drift monitor on 16 completions with 8 orders on every second generation batch (every batch in
the probe; the monitor's 8 x 64 forward passes are most of a run's time). Rollouts use the dual KV cache
(`--compare-rollouts`: the SFT checkpoint's T=1 samples score 0.734 ± 0.004 per character with it against 0.737 ±
0.003 with exact decoding, 3.6x faster); the trainer scores every completion with the exact model, and held-out
accuracy is measured with exact greedy decoding on 128 prompts, exact match and per character.

The grid, fixed before any outcome of it was seen:

* FPO as the release runs it: 12 inner iterations per generation batch, 4 Monte-Carlo ELBO samples.
* SPG as the release runs it: 4 inner iterations, its `block_random` estimator with 2 samples (`num_t`).
* Two learning rates each, one where the base objective stays stable and one where it drifts (`LEARNING_RATES`),
  chosen by the one-seed probe (`--probe 1e-4 3e-4 1e-3 --seeds 99 --drift-every 1`: base only, the sweep's sizes,
  seed 99, which is not a seed of the sweep; docs/double_drift.md has its numbers). Of the probed rates, the stable
  one is the highest whose drift gap grows by less than 0.25 nats (last - first quarter; the gap starts near 1.5
  nats per 64-token completion and moves by about 1 nat from batch to batch) with the last quarter's reward at least
  the first's - 0.01; the drifting one is the lowest whose gap grows by 0.5 nats or more or whose on-policy ELBO
  falls by 2 nats or more (the highest probed if none does).
* Methods: base (`dipod_beta=0`), + DiPOD at 0.05 (the paper's) and at 0.2.
* Seeds 0-4, 16 generation batches per run in every cell: 60 runs. They run seed-major (every cell's methods for
  seed 0, then seed 1, ...), so that a partly finished sweep has the same seeds in every cell.

Each finished run's result is written next to its checkpoint under OUTPUT_DIR and never run again; the table
(`double_drift.table`: means, 95% t-intervals, DiPOD - base with 95% Welch intervals) is made of the seeds that
finished for every method of a cell, followed by the differences its seeds could detect and DiPOD - base paired by
seed. Writes docs/double_drift_long.csv (every run's values), docs/double_drift_long.png and the tables between the
markers in docs/double_drift.md (other names: --docs-name, --docs-page; docs/double_drift_confirm.md is one).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

from _long_sort import DEFAULT_SFT_DIR, GEN_LENGTH, ROOT, digit_accuracy, load_long_sort, sft_model
from double_drift import (
    COLUMNS,
    detectable_difference,
    interval,
    matched_seeds,
    method_groups,
    plot,
    result_path,
    run_pending,
    table,
    table_header,
    write_csv,
)

from dipod_trl.commands.demo import quarter_mean

# The release's inner iterations and ELBO estimator per objective.
RECIPES = {
    "fpo": dict(num_iterations=12, elbo_num_samples=4, elbo_estimator="mc"),
    "spg": dict(num_iterations=4, elbo_num_samples=2, elbo_estimator="block_random"),
}
# (stable, drifting) learning rate of the base objective, from the one-seed probe (docs/double_drift.md).
LEARNING_RATES = {"fpo": (1e-4, 3e-4), "spg": (3e-5, 1e-4)}
METHODS = {"base": 0.0, "+DiPOD 0.05": 0.05, "+DiPOD 0.2": 0.2}
SCHEDULE = dict(max_completion_length=GEN_LENGTH, block_length=16, diffusion_steps=32)
SCHEDULE_EVAL = dict(gen_length=GEN_LENGTH, block_length=16, steps=32)
LONG_COLUMNS = {
    **{name: stat for name, stat in COLUMNS.items() if name != "held-out accuracy"},
    "held-out exact match": lambda r: r["eval_exact_match"],
    "held-out per-character accuracy": lambda r: r["eval_char_accuracy"],
}
DOCS = os.path.join(ROOT, "docs")
TABLE_MARKERS = ("<!-- long table: start (benchmarks/double_drift_long.py writes it) -->", "<!-- long table: end -->")


def cell_name(objective: str, learning_rate: float) -> str:
    recipe = RECIPES[objective]
    return (f"{recipe['num_iterations']} iters, {recipe['elbo_num_samples']} {recipe['elbo_estimator']} samples, "
            f"lr {learning_rate:g}")


def logged(logs: dict, key: str) -> float:
    """A logged value as a float; NaN where it is missing or logged as None (seen in a collapsing run's drift
    monitor), so that the run keeps its other values."""
    value = logs.get(key)
    return float("nan") if value is None else float(value)


def progress(job: dict):
    """A callback that prints each generation batch's reward, drift gap and time: a slow sweep's log shows where it
    is."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        start = time.perf_counter()
        batches = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.batches += 1
                print(f"  {job['objective']} lr {job['learning_rate']:g} {job['method']} seed {job['seed']}: batch "
                      f"{self.batches}/{job['generations']} reward {logged(logs, 'reward'):.3f} gap "
                      f"{logged(logs, 'drift/gap'):.3f} ELBO {logged(logs, 'drift/elbo'):.2f} "
                      f"({time.perf_counter() - self.start:.0f} s)", flush=True)

    return Progress()


def run_one(job: dict) -> dict:
    import torch
    from rl_fast_rollouts import held_out
    from transformers import AutoModel, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging

    from dipod_trl import DiPODConfig, DiPODTrainer

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    recipe = job.get("recipe") or RECIPES[job["objective"]]  # estimator_rl.py runs other ELBO estimators
    config = DiPODConfig(
        output_dir=job["out"], objective=job["objective"], dipod_beta=job["dipod_beta"], dipod_normalization="token",
        learning_rate=job["learning_rate"], lr_scheduler_type="constant", **recipe,
        max_steps=job["generations"] * recipe["num_iterations"], per_device_train_batch_size=job["batch_size"],
        num_generations=8, temperature=1.0, drift_num_orders=8, drift_num_sequences=job["drift_sequences"],
        drift_every=job["drift_every"],
        kv_cache=job["kv_cache"], logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        seed=job["seed"], **SCHEDULE,
    )
    train = load_long_sort("train", num_examples=job["generations"] * job["batch_size"] // 4, seed=100 + job["seed"])
    trainer = DiPODTrainer(AutoModel.from_pretrained(job["sft"]), digit_accuracy, args=config, train_dataset=train,
                           processing_class=AutoTokenizer.from_pretrained(job["sft"]))
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress(job))
    start = time.perf_counter()
    trainer.train()
    trainer.save_model(job["out"])
    logs = [h for h in trainer.state.log_history if "reward" in h]
    accuracy = held_out(trainer.model.eval(), trainer.processing_class,
                        SimpleNamespace(num_eval_examples=job["eval_examples"]))
    return {key: job[key] for key in ("objective", "cell", "method", "dipod_beta", "learning_rate", "seed",
                                      "generations", "kv_cache")} | {
        "seconds": time.perf_counter() - start, "step": [h["step"] for h in logs],
        **{name: [logged(h, key) for h in logs] for name, key in (("reward", "reward"), ("drift_gap", "drift/gap"),
                                                                   ("drift_elbo", "drift/elbo"))}, **accuracy,
        **{f"seconds_{key}": sum(h.get(f"time/{key}", 0.0) for h in logs) for key in ("generation", "scoring")}}


def describe(run: dict) -> str:
    return (f"done {run['objective']} {run['cell']:38s} {run['method']:11s} seed {run['seed']} "
            f"reward {quarter_mean(run['reward'], False):.3f} -> {quarter_mean(run['reward']):.3f} "
            f"gap {quarter_mean(run['drift_gap'], False):.3f} -> {quarter_mean(run['drift_gap']):.3f} "
            f"ELBO {quarter_mean(run['drift_elbo'], False):.2f} -> {quarter_mean(run['drift_elbo']):.2f} "
            f"held-out char {run['eval_char_accuracy']:.3f} exact {run['eval_exact_match']:.3f} "
            f"({run['seconds']:.0f} s)")


def sft_accuracy(args) -> dict:
    """The SFT checkpoint's held-out accuracy (exact greedy decoding), measured once and kept beside the runs."""
    from rl_fast_rollouts import held_out

    path = os.path.join(args.output_dir, "sft_accuracy.json")
    if not os.path.exists(path):
        model, tokenizer = sft_model(args.sft_dir, steps=args.sft_steps)
        with open(path, "w") as f:
            json.dump(held_out(model, tokenizer, SimpleNamespace(num_eval_examples=args.eval_examples)), f)
    return json.load(open(path))


def compare_rollouts(args) -> None:
    """Rollouts' exactness: the SFT checkpoint's samples at T=1 on held-out prompts, exact vs dual-cache decoding, with
    the same seed; per-character accuracy (the sweep's reward) and exact match, mean and standard error."""
    import torch

    from dipod_trl.evaluation import evaluate_records
    from dipod_trl.options import FastDecodingArguments, SamplerArguments

    torch.set_num_threads(1)
    model, tokenizer = sft_model(args.sft_dir, steps=args.sft_steps)
    test = load_long_sort("test", args.eval_examples)
    sampler = SamplerArguments(block_length=SCHEDULE_EVAL["block_length"], temperature=1.0)
    for name, fast in (("exact", None), ("dual", FastDecodingArguments(kv_cache="dual"))):
        start = time.perf_counter()
        _, records = evaluate_records(model, tokenizer, test, digit_accuracy, gen_length=SCHEDULE_EVAL["gen_length"],
                                      steps=SCHEDULE_EVAL["steps"], sampler=sampler, fast=fast, num_generations=4,
                                      batch_size=64, seed=0, progress=False)
        scores = torch.tensor([score for r in records for score in r["scores"]["project"]])
        print(f"{name:6s} T=1, {len(scores)} samples: per-character reward {scores.mean():.4f} ± "
              f"{scores.std() / len(scores) ** 0.5:.4f} (se), {time.perf_counter() - start:.0f} s", flush=True)


def detectable_table(runs: list[dict], pairs, methods: dict, columns: dict) -> str:
    """Per cell and DiPOD setting, the smallest DiPOD - base difference of each column that its seeds' spread lets a
    two-sided 5% Welch test detect with 80% power (`double_drift.detectable_difference`)."""
    names = list(methods)
    lines = table_header("comparison", columns)
    for objective, cell in pairs:
        groups = method_groups(runs, objective, cell, names)
        if min(len(g) for g in groups.values()) < 2:
            continue
        base = groups[names[0]]
        for method in names[1:]:
            sizes = [detectable_difference([stat(r) for r in groups[method]], [stat(r) for r in base])
                     for stat in columns.values()]
            lines.append(f"| {objective} | {cell} | {method.lstrip('+')} - {names[0]} | {len(base)} | "
                         + " | ".join(f"{size:.3f}" for size in sizes) + " |")
    return "\n".join(lines)


def paired_table(runs: list[dict], pairs, methods: dict, columns: dict) -> str:
    """Per cell and DiPOD setting, DiPOD - base paired by seed (the runs of a seed share the SFT start, the prompts
    and the first generation batch): the mean of the per-seed differences, its 95% t-interval, and on how many
    seeds DiPOD's value is the larger."""
    names = list(methods)
    lines = table_header("comparison", columns)
    for objective, cell in pairs:
        by_seed = {m: {r["seed"]: r for r in group} for m, group in method_groups(runs, objective, cell, names).items()}
        seeds = sorted(set.intersection(*(set(group) for group in by_seed.values())))
        if len(seeds) < 2:
            continue
        base = by_seed[names[0]]
        for method in names[1:]:
            cells = []
            for stat in columns.values():
                differences = [stat(by_seed[method][seed]) - stat(base[seed]) for seed in seeds]
                mean, half_width = interval(differences)
                cells.append(f"{mean:.3f} ± {half_width:.3f} ({sum(d > 0 for d in differences)}/{len(seeds)})")
            lines.append(f"| {objective} | {cell} | {method.lstrip('+')} - {names[0]} | {len(seeds)} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs_table(text: str, path: str) -> None:
    """Replace the table between TABLE_MARKERS in `path` (the rest of the page is written by hand)."""
    page = open(path).read()
    start, end = TABLE_MARKERS
    if start not in page or end not in page:
        raise ValueError(f"{path} has no {start!r} ... {end!r} block for the long-task table: add the two markers.")
    head, rest = page.split(start, 1)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--objectives", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--learning-rates", type=float, nargs="+",
                        help="only these of the grid's learning rates (default: all)")
    parser.add_argument("--probe", type=float, nargs="+", metavar="LR",
                        help="the learning-rate probe: the base objective at these rates instead of the grid, "
                        "results under OUTPUT_DIR/probe, summary printed only")
    parser.add_argument("--generations", type=int, default=16, help="generation batches per run")
    parser.add_argument("--batch-size", type=int, default=32, help="completions per generation batch (8 per prompt)")
    parser.add_argument("--drift-sequences", type=int, default=16, help="completions the drift monitor scores")
    parser.add_argument("--drift-every", type=int, default=2,
                        help="monitor every n-th generation batch (the monitor is most of a run's time at 64 tokens)")
    parser.add_argument("--eval-examples", type=int, default=128, help="held-out prompts")
    parser.add_argument("--rollouts", default="dual", choices=["dual", "exact"],
                        help="'dual': rollouts with the dual KV cache; 'exact': exact decoding")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time, each in its own process (0: one at a "
                        "time in this process)")
    parser.add_argument("--sft-dir", default=DEFAULT_SFT_DIR)
    parser.add_argument("--sft-steps", type=int, default=400, help="masked-SFT steps if --sft-dir has no checkpoint")
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "outputs", "double_drift_long"))
    parser.add_argument("--docs-dir", default=DOCS, help="where the CSV, PNG and double_drift.md's table go")
    parser.add_argument("--docs-name", default="double_drift_long",
                        help="file name (no extension) of the CSV and PNG written under --docs-dir")
    parser.add_argument("--docs-page", default="double_drift.md",
                        help="the page under --docs-dir whose table between the long-table markers is rewritten")
    parser.add_argument("--compare-rollouts", action="store_true",
                        help="run nothing: compare the SFT checkpoint's T=1 samples, exact vs dual-cache decoding")
    parser.add_argument("--summarise-only", action="store_true",
                        help="run nothing: write the table, CSV and figure from the runs that have finished")
    return parser.parse_args(argv)


def make_jobs(args) -> list[dict]:
    """Seed-major: every cell and method of a seed before the next seed."""
    rates = {o: args.probe or [lr for lr in LEARNING_RATES[o] if not args.learning_rates or lr in args.learning_rates]
             for o in args.objectives}
    methods = {"base": 0.0} if args.probe else {m: METHODS[m] for m in args.methods}
    root = os.path.join(args.output_dir, "probe") if args.probe else args.output_dir
    return [
        dict(objective=objective, cell=cell_name(objective, lr), learning_rate=lr, method=method, dipod_beta=beta,
             seed=seed, sft=args.sft_dir, generations=args.generations, batch_size=args.batch_size,
             drift_sequences=args.drift_sequences, drift_every=args.drift_every, eval_examples=args.eval_examples,
             kv_cache=None if args.rollouts == "exact" else "dual",
             out=os.path.join(root, objective, f"lr{lr:g}", method.replace(" ", "_").replace("+", ""), str(seed)))
        for seed in args.seeds for objective in args.objectives for lr in rates[objective]
        for method, beta in methods.items()
    ]


def main(argv=None):
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    os.makedirs(args.output_dir, exist_ok=True)
    if args.compare_rollouts:
        return compare_rollouts(args)
    start = sft_accuracy(args)
    print(f"SFT start, held out: exact match {start['eval_exact_match']:.3f}, per character "
          f"{start['eval_char_accuracy']:.3f}", flush=True)
    jobs = make_jobs(args)
    runs = [json.load(open(result_path(job))) for job in jobs if os.path.exists(result_path(job))]
    print(f"{len(runs)} of {len(jobs)} runs already finished under {args.output_dir}: not run again", flush=True)
    if not args.summarise_only:
        runs += run_pending(jobs, run_one, args.workers, describe)
    methods = {"base": 0.0} if args.probe else {m: METHODS[m] for m in args.methods}
    pairs = list(dict.fromkeys((job["objective"], job["cell"]) for job in jobs))
    kept = runs if args.probe else matched_seeds(runs, methods)
    text = (f"{args.generations} generation batches of {args.batch_size} completions per run; SFT start, held out: "
            f"exact match {start['eval_exact_match']:.3f}, per character {start['eval_char_accuracy']:.3f}\n\n"
            + table(kept, pairs, methods, LONG_COLUMNS))
    if not args.probe and len(methods) > 1:
        text += ("\n\nThe smallest DiPOD - base difference each comparison's seeds could detect, from their "
                 "spread: a true difference this large is found (95% Welch interval excluding 0) in about 80% of such "
                 "sweeps (77% in simulated 5 + 5-seed sweeps of normal spread, tests/test_double_drift.py).\n\n"
                 + detectable_table(kept, pairs, methods, LONG_COLUMNS)
                 + "\n\nDiPOD - base paired by seed (the runs of a seed share the SFT start, the prompts and the "
                 "first generation batch), with its 95% t-interval and on how many seeds DiPOD's value is the "
                 "larger.\n\n" + paired_table(kept, pairs, methods, LONG_COLUMNS))
    print(text)
    if args.probe:
        return
    os.makedirs(args.docs_dir, exist_ok=True)
    write_csv(runs, os.path.join(args.docs_dir, f"{args.docs_name}.csv"), LONG_COLUMNS,
              fields=("objective", "cell", "method", "dipod_beta", "learning_rate", "seed", "generations", "seconds"))
    if runs:  # every finished run's curves, the table's or not (the legend counts the seeds)
        plot(runs, os.path.join(args.docs_dir, f"{args.docs_name}.png"), pairs, methods,
             title="32-digit sort (64 tokens, 4 blocks of 16), tiny model:\nbase vs + DiPOD", reward_limits=None)
    write_docs_table(text, os.path.join(args.docs_dir, args.docs_page))
    print(f"wrote {args.docs_dir}/{args.docs_name}.csv, .png and the table in {args.docs_page}")


if __name__ == "__main__":
    main()

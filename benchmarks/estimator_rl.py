"""RL at equal forward passes with different ELBO estimators: does a lower-error estimate train better?

    python benchmarks/estimator_rl.py                        # both parts, 5 seeds each, one worker process
    python benchmarks/estimator_rl.py --parts demo --seeds 0 --generations 3     # a quick look
    python benchmarks/estimator_rl.py --summarise-only       # the tables of what has finished

* `demo`: the demo's FPO + DiPOD setting (`dipod_trl.commands.demo.RECIPE`: 2 inner iterations, K = 2 ELBO samples,
  lr 2e-4, `dipod_beta` 0.05 with token normalisation; 64 completions of 8 tokens per generation batch; 10 generation
  batches, as the demo runs it) from the demo's masked-SFT checkpoint, with the estimators of `DEMO_ESTIMATORS`
  (each K = 2, so the same forward passes).
* `long`: FPO as the release runs it (12 inner iterations), with DiPOD (`dipod_beta` 0.05) and alone, on the 64-token
  sort task of `double_drift_long.py`, from the committed SFT checkpoint, at `--long-lr`: 2 `quadrature` samples
  against the release's 4 `mc` samples (half the forward passes of the ELBO), nothing else changed.

Per part and estimator: mean and 95% t-interval over seeds of the reward, the on-policy drift gap (importance-weighted
order bound - ELBO), its growth, the on-policy ELBO's change and the held-out accuracy; then each estimator minus the
first with its 95% Welch interval (`double_drift.table`). Each run's result is written next to its checkpoint under
OUTPUT_DIR (runs seed-major; a run with a result is never run again); the tables go to OUTPUT_DIR/estimator_rl.md
and the CSVs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _long_sort import ROOT
from double_drift import COLUMNS, matched_seeds, result_path, run_pending, table, write_csv

from dipod_trl.commands.demo import RECIPE, quarter_mean

DEMO_ESTIMATORS = ("mc", "antithetic", "quadrature")
# (estimator, K) of the long part: the release's 4 mc samples against 2 of the new estimator.
LONG_ESTIMATORS = {"mc x4": ("mc", 4), "quadrature x2": ("quadrature", 2)}
DEMO_CELL = "FPO+DiPOD, 2 iters, K=2, lr 2e-4"
LONG_SFT = os.path.join(ROOT, "benchmarks", "results", "long_sort_sft")  # the committed 64-token SFT checkpoint


def run_demo_job(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    from dipod_trl.commands.demo import DemoConfig, accuracy, load_digit_sort, rl_run
    from dipod_trl.models import build_tiny_tokenizer

    hf_logging.disable_progress_bar()
    recipe = {**RECIPE, "elbo_estimator": job["method"]}
    config = DemoConfig(output_dir=job["out"], generation_batches=job["generations"], dipod_normalization="token",
                        **recipe)
    start = time.perf_counter()
    run = rl_run(config, job["sft"], "FPO+DiPOD", job["seed"], out=job["out"], dipod_beta=config.dipod_beta)
    run["accuracy"] = accuracy(run["path"], load_digit_sort("test", num_examples=256, seed=0), build_tiny_tokenizer())
    run.update(cell=job["cell"], objective="fpo", method=job["method"], seconds=time.perf_counter() - start)
    return run


def run_long_job(job: dict) -> dict:
    from double_drift_long import run_one

    return run_one(job)


def describe(run: dict) -> str:
    accuracy = run.get("accuracy", run.get("eval_char_accuracy"))
    return (f"done {run['cell']:36s} {run['method']:14s} seed {run['seed']} reward {quarter_mean(run['reward']):.3f} "
            f"gap {quarter_mean(run['drift_gap']):.3f} acc {accuracy:.3f} ({run['seconds']:.0f} s)")


def demo_jobs(args) -> list[dict]:
    sft = os.path.join(args.output_dir, "demo", "sft")
    return [dict(cell=DEMO_CELL, method=estimator, seed=seed, sft=sft, generations=args.generations,
                 out=os.path.join(args.output_dir, "demo", estimator, str(seed)))
            for seed in args.seeds for estimator in DEMO_ESTIMATORS]


def long_jobs(args) -> list[dict]:
    """The long part's runs: FPO + DiPOD (under long/) and FPO alone (under long_base/), each estimator arm."""
    from double_drift_long import RECIPES

    def cell(beta):
        return f"{'FPO+DiPOD' if beta else 'FPO'}, 12 iters, lr {args.long_lr:g}, 64 tokens"

    return [dict(objective="fpo", cell=cell(beta), learning_rate=args.long_lr, method=name, dipod_beta=beta,
                 seed=seed, recipe={**RECIPES["fpo"], "elbo_estimator": estimator, "elbo_num_samples": k},
                 sft=LONG_SFT, generations=args.long_generations, batch_size=32, drift_sequences=16, drift_every=2,
                 eval_examples=128, kv_cache="dual",
                 out=os.path.join(args.output_dir, "long" if beta else "long_base", name.replace(" ", "_"),
                                  str(seed)))
            for beta in args.long_betas for seed in args.seeds for name, (estimator, k) in LONG_ESTIMATORS.items()]


def summarise(part: str, jobs: list[dict], runs: list[dict], methods, columns, output_dir: str) -> str:
    kept = matched_seeds(runs, methods)
    pairs = list(dict.fromkeys((job["objective"] if "objective" in job else "fpo", job["cell"]) for job in jobs))
    text = table(kept, pairs, methods, columns)
    if len(methods) > 2:  # the new estimator against the product's default too
        others = [m for m in methods if m != DEMO_ESTIMATORS[0]]
        text += "\n\n" + table(kept, pairs, others, columns)
    write_csv(runs, os.path.join(output_dir, f"estimator_rl_{part}.csv"), columns)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["demo", "long"], choices=["demo", "long"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--generations", type=int, default=10,
                        help="generation batches per demo run (the demo's recipe_generation_batches)")
    parser.add_argument("--long-generations", type=int, default=16, help="generation batches per long run")
    parser.add_argument("--long-lr", type=float, default=3e-4,
                        help="learning rate of the long part (3e-4: where the drift sweep found base FPO drifting)")
    parser.add_argument("--long-betas", type=float, nargs="+", default=[0.05, 0.0],
                        help="dipod_beta of the long part's runs: FPO + DiPOD, and FPO alone")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "benchmarks", "results", "estimator_rl"))
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from dipod_trl.commands.demo import DemoConfig, pretrain
    from dipod_trl.models import build_tiny_tokenizer

    hf_logging.disable_progress_bar()
    os.makedirs(args.output_dir, exist_ok=True)
    texts = []
    for part in ("demo", "long"):  # the tables of both parts, so that running one part keeps the other's
        if part == "demo":
            jobs, run_one, methods = demo_jobs(args), run_demo_job, DEMO_ESTIMATORS
            columns = COLUMNS
            sft = jobs[0]["sft"]
            if part in args.parts and not args.summarise_only and not os.path.exists(os.path.join(sft, "config.json")):
                pretrain(DemoConfig(), build_tiny_tokenizer(), sft)
            title = f"demo task, {args.generations} generation batches per run"
        else:
            from double_drift_long import LONG_COLUMNS

            jobs, run_one, methods, columns = long_jobs(args), run_long_job, tuple(LONG_ESTIMATORS), LONG_COLUMNS
            title = f"64-token task, {args.long_generations} generation batches of 32 completions per run"
        runs = [json.load(open(result_path(job))) for job in jobs if os.path.exists(result_path(job))]
        print(f"{part}: {len(runs)} of {len(jobs)} runs already finished", flush=True)
        if part in args.parts and not args.summarise_only:
            runs += run_pending(jobs, run_one, args.workers, describe)
        if not runs:
            continue
        texts.append(f"## {title}\n\n" + summarise(part, jobs, runs, methods, columns, args.output_dir))
        print(texts[-1], flush=True)
    with open(os.path.join(args.output_dir, "estimator_rl.md"), "w") as f:
        f.write("\n\n".join(texts) + "\n")


if __name__ == "__main__":
    main()

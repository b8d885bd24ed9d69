"""Where does the ELBO surrogate drift on the tiny model, and does DiPOD hold it? A sweep over the paper's own knobs.

    python benchmarks/double_drift.py                      # the grid below, 5 seeds per cell, 2 workers
    python benchmarks/double_drift.py --seeds 0 --cells "12 iters, 1 MC sample" --objectives fpo --generations 5

Every run starts from the demo's masked-SFT checkpoint on digit_sort (built once, here) and RL-trains with the demo's
fixed settings (64 completions of 8 tokens in 2 blocks per generation batch, 8 per prompt, T=1, exact-match reward,
`dipod_normalization="token"`) and the knobs of its cell: inner iterations per generation batch (the release: 12 for
FPO, 4 for SPG), ELBO samples and estimator (1 plain Monte-Carlo sample is the noisiest), and the learning rate. Each
cell runs the base objective (`dipod_beta=0`) and the same objective + DiPOD (`dipod_beta=0.05`) on the same seeds.
Every run sees the same number of generation batches (`--generations`), so a cell with 12 inner iterations takes 12
optimizer steps per batch where one with 2 takes 2: the cells differ in how hard they optimise each batch, not in how
much data they see.

Per generation batch the trainer logs the reward of the sampled completions and the drift monitor's gap (importance-
weighted order bound - ELBO, nats per completion) and ELBO of on-policy completions; the held-out greedy accuracy is
measured at the end. The table gives per cell and method, as mean and 95% t-interval over seeds: reward and gap over
the last quarter of the run, the gap's growth and the on-policy ELBO's change (last quarter - first quarter), and the
accuracy; then the difference DiPOD - base with its 95% Welch interval. Writes OUTPUT_DIR/double_drift.md,
OUTPUT_DIR/double_drift.png, every run's values in OUTPUT_DIR/double_drift.csv, and each run's result next to its
checkpoint; a sweep started again with the same arguments runs only what is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import textwrap
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from statistics import NormalDist

from dipod_trl.commands.demo import quarter_mean

# The grid searched: each cell's values of the demo's RL settings (`DemoConfig` fields).
CELLS = {
    "2 iters, 2 antithetic samples": dict(num_iterations=2, elbo_num_samples=2, elbo_estimator="antithetic",
                                          learning_rate=2e-4),
    "4 iters, 1 MC sample, lr 5e-4": dict(num_iterations=4, elbo_num_samples=1, elbo_estimator="mc",
                                          learning_rate=5e-4),
    "12 iters, 1 MC sample": dict(num_iterations=12, elbo_num_samples=1, elbo_estimator="mc", learning_rate=2e-4),
    "12 iters, 1 MC sample, lr 5e-4": dict(num_iterations=12, elbo_num_samples=1, elbo_estimator="mc",
                                           learning_rate=5e-4),
    "12 iters, 1 MC sample, lr 1e-3": dict(num_iterations=12, elbo_num_samples=1, elbo_estimator="mc",
                                           learning_rate=1e-3),
    "12 iters, 2 antithetic samples, lr 1e-3": dict(num_iterations=12, elbo_num_samples=2,
                                                    elbo_estimator="antithetic", learning_rate=1e-3),
}
OBJECTIVES = ("fpo", "spg")
BETAS = {"base": 0.0, "+DiPOD": 0.05}
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function, by the modified Lentz method."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d, c = 1 + numerator * d, 1 + numerator / c
            d, c = 1 / (d if abs(d) > tiny else tiny), c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1) < 1e-15:
            return result
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (Numerical Recipes 6.4), to about 1e-14."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):  # where the fraction converges fast; else by the symmetry I_x(a,b) = 1 - I_1-x(b,a)
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_continued_fraction(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (any positive real) degrees of freedom."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` (any positive real, or inf) degrees of freedom, by bisection of
    `t_cdf` to float precision (no table, no rounding of the degrees of freedom)."""
    if not (0 < p < 1 and df > 0):
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    from dipod_trl.commands.demo import DemoConfig, accuracy, load_digit_sort, rl_run
    from dipod_trl.models import build_tiny_tokenizer

    hf_logging.disable_progress_bar()
    config = DemoConfig(output_dir=job["out"], generation_batches=job["generations"], objective=job["objective"],
                        dipod_normalization="token", **CELLS[job["cell"]])
    start = time.perf_counter()
    run = rl_run(config, job["sft"], job["method"], job["seed"], out=job["out"], dipod_beta=job["dipod_beta"])
    test = load_digit_sort("test", num_examples=256, seed=0)
    run["accuracy"] = accuracy(run["path"], test, build_tiny_tokenizer())
    run.update(cell=job["cell"], objective=job["objective"], method=job["method"], seconds=time.perf_counter() - start)
    return run


# The table's columns: name, and the statistic of one run.
COLUMNS = {
    "reward (last 25%)": lambda r: quarter_mean(r["reward"]),
    "drift gap (last 25%)": lambda r: quarter_mean(r["drift_gap"]),
    "gap growth (last - first 25%)": lambda r: quarter_mean(r["drift_gap"]) - quarter_mean(r["drift_gap"], False),
    "on-policy ELBO change": lambda r: quarter_mean(r["drift_elbo"]) - quarter_mean(r["drift_elbo"], False),
    "held-out accuracy": lambda r: r["accuracy"],
}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.975, n - 1) * sd / math.sqrt(n)


def difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95% Welch interval (t quantile at the exact Welch-Satterthwaite
    degrees of freedom, not rounded)."""
    se, df = welch_df(a, b)
    return sum(a) / len(a) - sum(b) / len(b), t_quantile(0.975, df) * se


def welch_df(a: list[float], b: list[float]) -> tuple[float, float]:
    """The standard error of mean(a) - mean(b) and its Welch-Satterthwaite degrees of freedom."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return 0.0, float(len(a) + len(b) - 2)
    return math.sqrt(va + vb), (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def detectable_difference(a: list[float], b: list[float]) -> float:
    """The smallest true difference of means that a two-sided 5% Welch test on samples spread like `a` and `b`
    detects with 80% power: (t_0.975 + t_0.80) x the difference's standard error."""
    se, df = welch_df(a, b)
    return (t_quantile(0.975, df) + t_quantile(0.80, df)) * se


def grid_pairs() -> list[tuple[str, str]]:
    """The (objective, cell) pairs of this grid, in table order."""
    return [(objective, cell) for objective in OBJECTIVES for cell in CELLS]


def method_groups(runs: list[dict], objective: str, cell: str, methods) -> dict[str, list[dict]]:
    """The runs of one cell, by method (in the order of `methods`)."""
    return {m: [r for r in runs if (r["objective"], r["cell"], r["method"]) == (objective, cell, m)] for m in methods}


def table_header(kind: str, columns) -> list[str]:
    """The two header lines of a markdown table of cells: objective, cell, `kind`, seeds, then `columns`."""
    return [f"| objective | cell | {kind} | seeds | " + " | ".join(columns) + " |", "| --- " * (4 + len(columns)) + "|"]


def table(runs: list[dict], pairs=None, methods=BETAS, columns=COLUMNS) -> str:
    """Per (objective, cell) and method: each column's mean and 95% t-interval over seeds; then each other method
    minus the first (the base) with its 95% Welch interval."""
    fmt = lambda m_h: f"{m_h[0]:.3f} ± {m_h[1]:.3f}"  # noqa: E731
    lines = table_header("method", columns)
    base_name = next(iter(methods))
    for objective, cell in pairs or grid_pairs():
        groups = method_groups(runs, objective, cell, methods)
        if not all(groups.values()):
            continue
        for method, group in groups.items():
            cells = [fmt(interval([stat(r) for r in group])) for stat in columns.values()]
            lines.append(f"| {objective} | {cell} | {method} | {len(group)} | " + " | ".join(cells) + " |")
        if min(len(g) for g in groups.values()) > 1:
            base = groups[base_name]
            for method, group in list(groups.items())[1:]:
                cells = [fmt(difference([stat(r) for r in group], [stat(r) for r in base]))
                         for stat in columns.values()]
                lines.append(f"| {objective} | {cell} | {method.lstrip('+')} - {base_name} | | " + " | ".join(cells)
                             + " |")
    return "\n".join(lines)


def plot(runs: list[dict], path: str, pairs=None, methods=BETAS,
         title: str = "digit_sort, tiny model: base objective vs + DiPOD", reward_limits=(0, 1)) -> None:
    """Per cell (columns): reward, drift gap and on-policy ELBO (rows) per generation batch, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dipod_trl.commands.demo import _smooth

    rows = (("reward", "reward (T=1)"), ("drift_gap", "drift gap (nats / completion)"),
            ("drift_elbo", "on-policy ELBO (nats / completion)"))
    cells = [pair for pair in pairs or grid_pairs() if any((r["objective"], r["cell"]) == pair for r in runs)]
    # At least 7.5 inches wide: the two-line title must fit above a single column.
    fig, axes = plt.subplots(len(rows), len(cells), figsize=(max(4.2 * len(cells), 7.5), 10), squeeze=False)
    for col, (objective, cell) in enumerate(cells):
        groups = method_groups(runs, objective, cell, methods)
        for method, color in zip(methods, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            group = groups[method]
            if not group:
                continue
            batches = np.arange(1, len(group[0]["reward"]) + 1)
            for row, (key, _) in enumerate(rows):
                curves = np.array([_smooth(r[key], window=5) for r in group])
                for curve in curves:
                    axes[row, col].plot(batches, curve, color=color, alpha=0.2, linewidth=0.7)
                axes[row, col].plot(batches, np.nanmean(curves, 0), color=color, linewidth=2,
                                    label=f"{objective} {method} ({len(group)} seeds)")
        axes[0, col].set(title=textwrap.fill(f"{objective}: {cell}", 38), ylim=reward_limits)  # fits its column
        axes[-1, col].set(xlabel="generation batch")
        for row, (_, label) in enumerate(rows):
            axes[row, 0].set(ylabel=label)
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend(fontsize=7)
    fig.suptitle(f"{title} (5-batch moving averages; thin lines: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def complete_cells(runs: list[dict], num_seeds: int, methods=BETAS) -> list[dict]:
    """The runs of the (objective, cell) pairs that have every seed for every method; the others are named."""
    count = Counter((r["objective"], r["cell"], r["method"]) for r in runs)
    complete = {(o, c) for o, c, _ in count if all(count[(o, c, m)] == num_seeds for m in methods)}
    for pair in sorted({(o, c) for o, c, _ in count} - complete):
        print(f"left out of the table (not every seed finished): {pair[0]}, {pair[1]}")
    return [r for r in runs if (r["objective"], r["cell"]) in complete]


def matched_seeds(runs: list[dict], methods=BETAS) -> list[dict]:
    """The runs whose (objective, cell, seed) has finished for every method, so that a partly finished sweep compares
    the methods on the same seeds; the others are named."""
    done = Counter((r["objective"], r["cell"], r["seed"]) for r in runs if r["method"] in methods)
    kept = [r for r in runs if done[(r["objective"], r["cell"], r["seed"])] == len(methods)]
    for objective, cell, seed in sorted(key for key, n in done.items() if n < len(methods)):
        print(f"left out of the table (not every method finished): {objective}, {cell}, seed {seed}")
    return kept


def write_csv(runs: list[dict], path: str, columns=COLUMNS,
              fields=("objective", "cell", "method", "dipod_beta", "seed", "seconds")) -> None:
    """One row per finished run: its settings and its value in every column (what the table's intervals are made
    of)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*fields, *columns])
        for r in sorted(runs, key=lambda r: tuple(str(r.get(k)) for k in fields[:5])):
            writer.writerow([r.get(k) for k in fields] + [f"{stat(r):.6g}" for stat in columns.values()])


def run_pending(jobs: list[dict], run_one, workers: int, describe) -> list[dict]:
    """Run the jobs that have no result file yet, in the order given; each result is written as soon as its run
    finishes, so an interrupted sweep keeps every finished run. workers=0: in this process; 1: each run in a fresh
    process, and a run whose process dies (killed for memory, say) is reported and left to do while the sweep goes
    on; more: that many processes at a time."""
    jobs = [job for job in jobs if not os.path.exists(result_path(job))]
    print(f"{len(jobs)} runs to go, on {workers or 'no'} worker process{'es' if workers != 1 else ''}", flush=True)
    runs = []
    with ExitStack() as stack:
        if workers == 0:
            results = map(run_one, jobs)
        elif workers == 1:
            results = map(lambda job: _in_fresh_process(run_one, job), jobs)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            results = pool.map(run_one, jobs)
        for job, run in zip(jobs, results):
            if run is None:
                continue
            runs.append(run)
            with open(result_path(job), "w") as f:
                json.dump(run, f)
            print(describe(run), flush=True)
    return runs


def _in_fresh_process(run_one, job: dict) -> dict | None:
    """run_one(job) in a new process (its memory is returned when it ends); None if that process died."""
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(run_one, job).result()
    except BrokenProcessPool:
        print(f"the process of the run in {job['out']} died (out of memory?): no result, it stays to do", flush=True)
        return None


def result_path(job: dict) -> str:
    """A finished run's curves and accuracy; a sweep started again skips the runs that have one."""
    return os.path.join(job["out"], f"run_{job['generations']}_batches.json")


def describe(run: dict) -> str:
    return (f"done {run['objective']:4s} {run['cell']:32s} {run['method']:7s} seed {run['seed']} "
            f"reward {quarter_mean(run['reward']):.3f} gap {quarter_mean(run['drift_gap']):.3f} "
            f"acc {run['accuracy']:.3f} ({run['seconds']:.0f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    parser.add_argument("--generations", type=int, default=30, help="generation batches per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output-dir", default="outputs/double_drift")
    parser.add_argument("--summarise-only", action="store_true",
                        help="only write the table and figure from the finished runs of the grid given")
    args = parser.parse_args()

    from dipod_trl.commands.demo import DemoConfig, pretrain
    from dipod_trl.models import build_tiny_tokenizer

    os.makedirs(args.output_dir, exist_ok=True)
    sft = os.path.join(args.output_dir, "sft")
    if not args.summarise_only and not os.path.exists(os.path.join(sft, "config.json")):
        pretrain(DemoConfig(), build_tiny_tokenizer(), sft)
    jobs = [
        dict(cell=cell, objective=objective, method=method, dipod_beta=beta, seed=seed, sft=sft,
             generations=args.generations,
             out=os.path.join(args.output_dir, objective, cell.replace(" ", "_").replace(",", ""), method, str(seed)))
        for objective in args.objectives for cell in args.cells for seed in args.seeds for method, beta in BETAS.items()
    ]
    start = time.perf_counter()
    runs = [json.load(open(result_path(job))) for job in jobs if os.path.exists(result_path(job))]
    if runs:
        print(f"{len(runs)} runs already finished in {args.output_dir}: not run again", flush=True)
    if not args.summarise_only:
        print(f"runs of {args.generations} generation batches", flush=True)
        runs += run_pending(jobs, run_one, args.workers, describe)
    runs = complete_cells(runs, len(args.seeds))
    text = table(runs)
    with open(os.path.join(args.output_dir, "double_drift.md"), "w") as f:
        f.write(f"{args.generations} generation batches per run, seeds {args.seeds}\n\n{text}\n")
    plot(runs, os.path.join(args.output_dir, "double_drift.png"))
    write_csv(runs, os.path.join(args.output_dir, "double_drift.csv"))
    print(text)
    print(f"wrote {args.output_dir}/double_drift.md and .png in {(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()

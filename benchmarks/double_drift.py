"""Where does the ELBO surrogate drift on the tiny model, and does DiPOD hold it? A sweep over the paper's own knobs.

    python benchmarks/double_drift.py                      # the grid below, 5 seeds per cell, 2 workers
    python benchmarks/double_drift.py --seeds 0 1 --cells demo --objectives fpo --rl-steps 40   # a quick look

Every run starts from the demo's masked-SFT checkpoint on digit_sort (built once, here) and RL-trains with the demo's
settings except for the knobs of its cell: inner iterations per generation batch (the release uses 12), ELBO samples
and estimator (1 plain Monte-Carlo sample is the noisiest), and the learning rate. Each cell runs the base objective
(`dipod_beta=0`) and the same objective + DiPOD (`dipod_beta=0.05`) on the same seeds.

Per run it records the reward of the sampled completions (exact match, T=1), the drift monitor's gap (importance-
weighted order bound - ELBO, nats per completion) and its ELBO of on-policy completions, and the held-out greedy
accuracy at the end. The table gives, per cell and method, the mean over the last quarter of each run (reward, gap)
and the final accuracy, as mean and 95% t-interval over seeds, and the difference DiPOD - base with its own interval
(Welch). Writes OUTPUT_DIR/double_drift.md, OUTPUT_DIR/double_drift.png and OUTPUT_DIR/runs.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

# The grid searched: each cell's overrides of the demo's DiPODConfig (demo: 2 iterations, 2 antithetic samples, 2e-4).
CELLS = {
    "demo": dict(num_iterations=2, elbo_num_samples=2, elbo_estimator="antithetic", learning_rate=2e-4),
    "12 iters, 1 MC sample": dict(num_iterations=12, elbo_num_samples=1, elbo_estimator="mc", learning_rate=2e-4),
    "12 iters, 1 MC sample, lr 1e-3": dict(num_iterations=12, elbo_num_samples=1, elbo_estimator="mc",
                                           learning_rate=1e-3),
}
OBJECTIVES = ("fpo", "spg")
BETAS = {"base": 0.0, "+DiPOD": 0.05}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    from dipod_trl.demo import DemoConfig, accuracy, load_digit_sort, rl_run
    from dipod_trl.models import build_tiny_tokenizer

    hf_logging.disable_progress_bar()
    config = DemoConfig(output_dir=job["out"], rl_steps=job["rl_steps"])
    start = time.perf_counter()
    run = rl_run(config, job["sft"], job["method"], job["seed"], out=job["out"], objective=job["objective"],
                 dipod_beta=job["dipod_beta"], dipod_normalization="token", **CELLS[job["cell"]])
    test = load_digit_sort("test", num_examples=256, seed=0)
    run["accuracy"] = accuracy(run["path"], test, build_tiny_tokenizer())
    run.update(cell=job["cell"], objective=job["objective"], method=job["method"], seconds=time.perf_counter() - start)
    return run


def tail_mean(values: list[float], fraction: float = 0.25) -> float:
    kept = [v for v in values[int(len(values) * (1 - fraction)):] if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T_975[min(n - 1, 10)] * sd / math.sqrt(n)


def difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95% Welch interval."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return ma - mb, 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return ma - mb, T_975[max(1, min(int(df), 10))] * math.sqrt(va + vb)


def table(runs: list[dict]) -> str:
    fmt = lambda m_h: f"{m_h[0]:.3f} ± {m_h[1]:.3f}"  # noqa: E731
    lines = ["| objective | cell | method | seeds | reward (last 25%) | drift gap (last 25%) | held-out accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for objective in OBJECTIVES:
        for cell in CELLS:
            groups = {m: [r for r in runs if (r["objective"], r["cell"], r["method"]) == (objective, cell, m)]
                      for m in BETAS}
            if not all(groups.values()):
                continue
            for method, group in groups.items():
                rewards = [tail_mean(r["reward"]) for r in group]
                gaps = [tail_mean(r["drift_gap"]) for r in group]
                lines.append(f"| {objective} | {cell} | {method} | {len(group)} | {fmt(interval(rewards))} "
                             f"| {fmt(interval(gaps))} | {fmt(interval([r['accuracy'] for r in group]))} |")
            if min(len(g) for g in groups.values()) > 1:
                base, dipod = groups["base"], groups["+DiPOD"]
                d_reward = difference([tail_mean(r["reward"]) for r in dipod], [tail_mean(r["reward"]) for r in base])
                d_gap = difference([tail_mean(r["drift_gap"]) for r in dipod],
                                   [tail_mean(r["drift_gap"]) for r in base])
                d_acc = difference([r["accuracy"] for r in dipod], [r["accuracy"] for r in base])
                lines.append(f"| {objective} | {cell} | DiPOD - base | | {fmt(d_reward)} | {fmt(d_gap)} "
                             f"| {fmt(d_acc)} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dipod_trl.demo import _smooth

    cells = [(o, c) for o in OBJECTIVES for c in CELLS if any((r["objective"], r["cell"]) == (o, c) for r in runs)]
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 7), squeeze=False)
    for col, (objective, cell) in enumerate(cells):
        for method, color in zip(BETAS, ("tab:blue", "tab:orange")):
            group = [r for r in runs if (r["objective"], r["cell"], r["method"]) == (objective, cell, method)]
            if not group:
                continue
            steps = group[0]["step"]
            for row, key in enumerate(("reward", "drift_gap")):
                curves = np.array([_smooth(r[key]) for r in group])
                for curve in curves:
                    axes[row, col].plot(steps, curve, color=color, alpha=0.2, linewidth=0.7)
                axes[row, col].plot(steps, np.nanmean(curves, 0), color=color, linewidth=2,
                                    label=f"{objective} {method} ({len(group)} seeds)")
        axes[0, col].set(title=f"{objective}: {cell}", ylabel="reward (T=1)", ylim=(0, 1))
        axes[1, col].set(xlabel="RL step", ylabel="drift gap (nats / completion)")
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend(fontsize=7)
    fig.suptitle("digit_sort, tiny model: base objective vs + DiPOD (10-step moving averages; thin lines: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    parser.add_argument("--rl-steps", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output-dir", default="outputs/double_drift")
    args = parser.parse_args()

    from dipod_trl.demo import DemoConfig, pretrain
    from dipod_trl.models import build_tiny_tokenizer

    os.makedirs(args.output_dir, exist_ok=True)
    sft = os.path.join(args.output_dir, "sft")
    if not os.path.exists(os.path.join(sft, "config.json")):
        pretrain(DemoConfig(), build_tiny_tokenizer(), sft)
    jobs = [
        dict(cell=cell, objective=objective, method=method, dipod_beta=beta, seed=seed, sft=sft,
             rl_steps=args.rl_steps,
             out=os.path.join(args.output_dir, objective, cell.replace(" ", "_").replace(",", ""), method, str(seed)))
        for objective in args.objectives for cell in args.cells for seed in args.seeds for method, beta in BETAS.items()
    ]
    start = time.perf_counter()
    print(f"{len(jobs)} runs of {args.rl_steps} RL steps on {args.workers} workers", flush=True)
    runs = []
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for run in pool.map(run_one, jobs):
            runs.append(run)
            print(f"done {run['objective']:4s} {run['cell']:32s} {run['method']:7s} seed {run['seed']} "
                  f"reward {tail_mean(run['reward']):.3f} gap {tail_mean(run['drift_gap']):.3f} "
                  f"acc {run['accuracy']:.3f} ({run['seconds']:.0f} s)", flush=True)
    with open(os.path.join(args.output_dir, "runs.json"), "w") as f:
        json.dump(runs, f)
    text = table(runs)
    with open(os.path.join(args.output_dir, "double_drift.md"), "w") as f:
        f.write(f"{args.rl_steps} RL steps per run, seeds {args.seeds}\n\n{text}\n")
    plot(runs, os.path.join(args.output_dir, "double_drift.png"))
    print(text)
    print(f"wrote {args.output_dir}/double_drift.md and .png in {(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()

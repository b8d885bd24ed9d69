"""FPO++ as released, with DiPOD's warm start, with the per-update DiPOD term, with both, and PPO, on gymnasium MuJoCo.

    python benchmarks/control_compare.py                 # HalfCheetah-v5 + Hopper-v5, 5 seeds, 200k steps/run
    python benchmarks/control_compare.py --total-timesteps 100000 --seeds 1 2 3 --envs Hopper-v5 --workers 4

Every flow run is a `FlowPolicyTrainer` with the same FPO++ config (`base_config` below); the variants differ only in
`dipod_beta` and `warmstart_rollouts`. The PPO row is the same trainer, networks, budget and seeds with a Gaussian
policy (`loss_type="ppo"`), so a reader sees where flow policies stand. Warm-start rollouts count towards the
env-step budget, so all variants see the same number of environment steps. Each variant's final returns are compared
with plain FPO++'s by Welch's t-test (two-sided p-value). Runs go to `--workers` processes (one torch thread each).
The curves are the deterministic evaluation return (seeded episodes and seeded flow noise) every `--eval-every`
updates; the table gives the final evaluation return and the mean training-episode return over the last 20% of each
run, mean ± std over seeds.
Writes `OUTPUT_DIR/returns.png`, `OUTPUT_DIR/summary.md`, and each run's `metrics.jsonl` in
`OUTPUT_DIR/ENV/VARIANT/seedS/`. A run whose directory already holds a finished run of the same budget is not run
again, so an interrupted sweep continues where it stopped; an unfinished one starts over.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = {
    "fpo++": dict(dipod_beta=0.0, warmstart_rollouts=0),
    "fpo++ + warm start": dict(dipod_beta=0.0, warmstart_rollouts=1),
    "fpo++ + dipod term": dict(dipod_beta=0.05, warmstart_rollouts=0),
    "fpo++ + both": dict(dipod_beta=0.05, warmstart_rollouts=1),
    "ppo": dict(loss_type="ppo", trust_region_mode="ppo", dipod_beta=0.0, warmstart_rollouts=0),
}
BASELINE = "fpo++"


def base_config(env_id: str, seed: int, total_timesteps: int, eval_every: int, output_dir: str):
    from dipod_trl.control import FlowPolicyConfig

    return FlowPolicyConfig(
        env_id=env_id,
        seed=seed,
        total_timesteps=total_timesteps,
        num_envs=8,
        num_steps=256,
        loss_type="fpo++",
        trust_region_mode="aspo",
        num_cfm_samples=32,
        eval_every=eval_every,
        eval_episodes=5,
        output_dir=output_dir,
        logging_steps=10**9,  # quiet: the table is printed at the end
        torch_num_threads=1,
    )


def is_finished(job: tuple) -> bool:
    """A finished run saved its final policy, and its last metrics row is at the budget's last rollout."""
    from dipod_trl.control.metrics import read_metrics

    env_id, _, seed, total_timesteps, eval_every, output_dir = job
    if not os.path.isdir(os.path.join(output_dir, "policy")):
        return False
    batch_size = base_config(env_id, seed, total_timesteps, eval_every, output_dir).batch_size
    records = read_metrics(output_dir)
    return bool(records) and records[-1].get("env_steps") == total_timesteps // batch_size * batch_size


def run_one(job: tuple) -> tuple:
    env_id, variant, seed, total_timesteps, eval_every, output_dir = job
    import dataclasses
    import warnings

    import mujoco

    # MuJoCo writes compiler warnings (Hopper's deprecated 'settotalmass') to MUJOCO_LOG.TXT in the cwd; keep them
    # as Python warnings instead.
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=2))
    from dipod_trl.control import FlowPolicyTrainer

    config = base_config(env_id, seed, total_timesteps, eval_every, output_dir)
    config = dataclasses.replace(config, **VARIANTS[variant], overwrite_output_dir=True)
    start = time.perf_counter()
    FlowPolicyTrainer(config).train()
    return env_id, variant, seed, output_dir, time.perf_counter() - start


def run_dir(root: str, env_id: str, variant: str, seed: int) -> str:
    return os.path.join(root, env_id, variant.replace(" ", "_").replace("+", "p"), f"seed{seed}")


def spread(values) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) else "-"


def welch_t_test(a, b) -> tuple[float, float]:
    """Welch's t statistic of mean(a) - mean(b) and its two-sided p-value (Welch-Satterthwaite degrees of freedom)."""
    import mpmath

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return float("nan"), float("nan")
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))  # P(|T_df| > |t|)
    return float(t), p


def summarise(root: str, envs: list[str], seeds: list[int], variants: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dipod_trl.control.metrics import read_metrics

    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
    lines = [
        f"| env | variant | final eval return | Welch t, p vs {BASELINE} | last-20% train return "
        "| warm start CFM loss before -> after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:gray"]
    for ax, env_id in zip(axes[0], envs):
        baseline_finals = None
        for color, variant in zip(colors, variants):
            curves, finals, train_returns, warm = [], [], [], []
            for seed in seeds:
                records = read_metrics(run_dir(root, env_id, variant, seed))
                evals = [(r["env_steps"], r["eval/return"]) for r in records if "eval/return" in r]
                curves.append(evals)
                finals.append(evals[-1][1])
                updates = [r for r in records if r.get("update", 0) > 0]
                tail = [r["episodic_return"] for r in updates[int(0.8 * len(updates)) :]]
                tail = [value for value in tail if value is not None]
                if tail:
                    train_returns.append(np.mean(tail))
                warm += [
                    (r["warmstart/cfm_loss_before"], r["warmstart/cfm_loss_after"])
                    for r in records
                    if "warmstart/cfm_loss_before" in r
                ]
            steps = np.array([s for s, _ in curves[0]])
            values = np.array([[v for _, v in c] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, color=color, label=variant)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
            warm_text = "-"
            if warm:
                before, after = np.mean([w[0] for w in warm]), np.mean([w[1] for w in warm])
                warm_text = f"{before:.3f} -> {after:.3f}"
            if variant == BASELINE:
                baseline_finals = finals
            test_text = "-"
            if baseline_finals is not None and variant != BASELINE and len(finals) > 1:
                t, p = welch_t_test(finals, baseline_finals)
                test_text = f"t = {t:.2f}, p = {p:.3f}"
            lines.append(
                f"| {env_id} | {variant} | {spread(finals)} | {test_text} "
                f"| {spread(train_returns)} | {warm_text} |"
            )
        ax.set_title(f"{env_id} ({len(seeds)} seeds, mean ± std)")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(root, "returns.png"), dpi=120)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-timesteps", type=int, default=200_000, help="env steps per run (default 200k)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (one per core)")
    parser.add_argument("--eval-every", type=int, default=10, help="evaluate every this many updates")
    parser.add_argument("--output-dir", default="outputs/control_compare")
    parser.add_argument("--summarise-only", action="store_true", help="only redraw the figure and table from the runs")
    args = parser.parse_args()

    jobs = [
        (env_id, variant, seed, args.total_timesteps, args.eval_every, run_dir(args.output_dir, env_id, variant, seed))
        for env_id in args.envs
        for seed in args.seeds
        for variant in args.variants
    ]
    start = time.perf_counter()
    if not args.summarise_only:
        finished = [job for job in jobs if is_finished(job)]
        if finished:
            print(f"{len(finished)} runs already finished in {args.output_dir}: not run again", flush=True)
            jobs = [job for job in jobs if job not in finished]
        print(f"{len(jobs)} runs of {args.total_timesteps} env steps on {args.workers} workers", flush=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
            for env_id, variant, seed, _, seconds in pool.map(run_one, jobs):
                print(f"done {env_id:15s} {variant:24s} seed {seed}  {seconds:6.0f} s", flush=True)
    table = summarise(args.output_dir, args.envs, args.seeds, args.variants)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write(f"{args.total_timesteps} env steps per run, seeds {args.seeds}\n\n{table}\n")
    print(table)
    print(f"wrote {os.path.join(args.output_dir, 'returns.png')} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

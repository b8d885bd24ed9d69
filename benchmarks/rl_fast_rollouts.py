"""RL with fast rollouts vs exact rollouts, from the same start and with the same seeds.

    python benchmarks/rl_fast_rollouts.py [--seeds 0 1 2] [--rl-steps 30] [--settings exact dual dual_t0.9]
    python benchmarks/rl_fast_rollouts.py --merge outputs/rl_fast_rollouts*/summary.json   # one plot and table

The demo's RL setting (FPO + DiPOD, token normalisation, 8 generations per prompt, 2 inner iterations, temperature 1)
on its long-completion variant (`_long_sort.py`: sort 32 digits, 64-token completions in 4 blocks of 16, 32 steps),
starting from the masked-SFT checkpoint that `bench_fast_sampling.py` uses. The reward is the per-character accuracy
(partial credit). Only the rollouts change between settings: the trainer scores every completion with the exact model.
Each run's held-out accuracy is measured at the end with exact greedy decoding, so settings compare policies, not
samplers. Writes outputs/rl_fast_rollouts/summary.json and docs/fast_rollouts_rl.png.
"""

import argparse
import json
import math
import os
import time

import torch
from _long_sort import DEFAULT_SFT_DIR, GEN_LENGTH, ROOT, digit_accuracy, exact_match, load_long_sort, sft_model
from transformers import AutoModel, AutoTokenizer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.evaluation import evaluate_task
from dipod_trl.options import SamplerArguments

SETTINGS = {
    "exact": {},
    "prefix": {"kv_cache": "prefix"},
    "dual": {"kv_cache": "dual"},
    "dual_r4": {"kv_cache": "dual", "cache_refresh_steps": 4},
    "t0.9": {"confidence_threshold": 0.9},
    "dual_t0.9": {"kv_cache": "dual", "confidence_threshold": 0.9},
    "dual_t0.7": {"kv_cache": "dual", "confidence_threshold": 0.7},
    "dual_t0.5": {"kv_cache": "dual", "confidence_threshold": 0.5},
}
SCHEDULE = dict(max_completion_length=GEN_LENGTH, block_length=16, diffusion_steps=32)


def rl_run(args, setting: str, seed: int) -> dict:
    out = os.path.join(args.output_dir, f"{setting}_seed{seed}")
    config = DiPODConfig(
        output_dir=out, objective="fpo", dipod_beta=0.05, dipod_normalization="token", learning_rate=args.lr,
        lr_scheduler_type="constant", max_steps=args.rl_steps, per_device_train_batch_size=args.batch_size,
        num_generations=8, num_iterations=2, temperature=1.0, elbo_num_samples=2, drift_num_orders=0,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=seed, **SCHEDULE,
        **SETTINGS[setting],
    )
    train = load_long_sort("train", num_examples=args.rl_steps * args.batch_size // 8, seed=100 + seed)
    trainer = DiPODTrainer(AutoModel.from_pretrained(args.sft_dir), digit_accuracy, args=config, train_dataset=train,
                           processing_class=AutoTokenizer.from_pretrained(args.sft_dir))
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logs = [h for h in trainer.state.log_history if "reward" in h]
    accuracy = held_out(trainer.model.eval(), trainer.processing_class, args)
    return {"setting": setting, "seed": seed, "fast": SETTINGS[setting], "seconds": seconds,
            "step": [h["step"] for h in logs], "reward": [h["reward"] for h in logs],
            "generation_seconds": [h["time/generation"] for h in logs],
            "forwards": [h["generation/forwards"] for h in logs], "loss": [h.get("loss") for h in logs],
            **accuracy}


def held_out(model, tokenizer, args) -> dict:
    """Exact greedy decoding on held-out prompts: exact-match and per-character accuracy."""
    test = load_long_sort("test", args.num_eval_examples)
    schedule = dict(gen_length=GEN_LENGTH, steps=SCHEDULE["diffusion_steps"],
                    sampler=SamplerArguments(block_length=SCHEDULE["block_length"]))
    return {name: evaluate_task(model, tokenizer, test, reward, **schedule, batch_size=64, progress=False)["accuracy"]
            for name, reward in (("eval_char_accuracy", digit_accuracy), ("eval_exact_match", exact_match))}


def _smooth(values, window=5):
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))]


def plot(runs, start_accuracy, path):
    """One panel per setting (its seeds, their mean, and exact rollouts' mean for reference), then reward against
    wall-clock time for all settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(dict.fromkeys(r["setting"] for r in runs))
    colors = dict(zip(settings, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    columns = 3
    rows = math.ceil((len(settings) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    axes = axes.ravel()
    mean_curve = {s: np.array([_smooth(r["reward"]) for r in runs if r["setting"] == s]).mean(0) for s in settings}
    for ax, setting in zip(axes, settings):
        group = [r for r in runs if r["setting"] == setting]
        steps = group[0]["step"]
        for r in group:
            ax.plot(steps, _smooth(r["reward"]), color=colors[setting], alpha=0.35, linewidth=0.9)
        ax.plot(steps, mean_curve[setting], color=colors[setting], linewidth=2.2, label=f"{setting} (mean)")
        if setting != "exact" and "exact" in mean_curve:
            ax.plot(steps, mean_curve["exact"], color="black", linestyle=":", linewidth=1.5, label="exact (mean)")
        ax.axhline(start_accuracy, color="gray", linestyle="--", linewidth=1, label="SFT start, held out")
        accuracy = [r["eval_char_accuracy"] for r in group]
        minutes = sum(r["seconds"] for r in group) / len(group) / 60
        ax.set(title=f"{setting}: held-out {np.mean(accuracy):.3f} ± {np.std(accuracy, ddof=1):.3f}, "
                     f"{minutes:.1f} min/run", xlabel="RL step", ylabel="reward (T=1)")
    low = min(min(_smooth(r["reward"])) for r in runs) - 0.005
    high = max(max(_smooth(r["reward"])) for r in runs) + 0.005
    for ax in axes[: len(settings)]:  # one scale, so that panels compare side by side
        ax.set_ylim(min(low, start_accuracy - 0.005), high)
    ax = axes[len(settings)]
    for setting in settings:
        for r in [r for r in runs if r["setting"] == setting]:
            clock = np.arange(1, len(r["step"]) + 1) * r["seconds"] / len(r["step"]) / 60
            ax.plot(clock, _smooth(r["reward"]), color=colors[setting], alpha=0.8,
                    label=setting if r["seed"] == runs[0]["seed"] else None)
    ax.set(title="reward against wall-clock time", xlabel="minutes per run (1 core, shared machine)",
           ylabel="reward (T=1)")
    for ax in axes[len(settings) + 1:]:
        ax.axis("off")
    for ax in axes[: len(settings) + 1]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("FPO + DiPOD on 32-digit sort (64-token completions in 4 blocks): exact vs fast rollouts, "
                 "same start and seeds (5-step moving average; thin lines: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(runs, start, plot_path):
    plot(runs, start["eval_char_accuracy"], plot_path)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"SFT start: held-out char accuracy {start['eval_char_accuracy']:.3f}. Per setting, means over seeds: wall "
          "and rollout seconds per run, model forwards per rollout batch, reward over the first 5 and last 10 "
          "rollout batches, held-out accuracy at the end (exact greedy decoding)\n")
    print(f"{'setting':<10}{'wall s':>8}{'rollout s':>10}{'forwards':>9}{'reward first 5':>15}{'last 10':>9}"
          f"{'held-out char':>15}{'held-out exact':>15}   held-out char per seed")
    for setting in dict.fromkeys(r["setting"] for r in runs):
        group = [r for r in runs if r["setting"] == setting]
        per_seed = ", ".join(f"{r['seed']}: {r['eval_char_accuracy']:.3f}" for r in group)
        print(f"{setting:<10}{mean([r['seconds'] for r in group]):>8.0f}"
              f"{mean([sum(r['generation_seconds']) for r in group]):>10.0f}"
              f"{mean([mean(r['forwards']) for r in group]):>9.1f}"
              f"{mean([mean(r['reward'][:5]) for r in group]):>15.3f}"
              f"{mean([mean(r['reward'][-10:]) for r in group]):>9.3f}"
              f"{mean([r['eval_char_accuracy'] for r in group]):>15.3f}"
              f"{mean([r['eval_exact_match'] for r in group]):>15.3f}   {per_seed}")
    assert all(math.isfinite(x) for r in runs for x in r["reward"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["exact", "dual", "dual_t0.9"], choices=list(SETTINGS))
    parser.add_argument("--rl-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--num-eval-examples", type=int, default=128)
    parser.add_argument("--sft-dir", default=DEFAULT_SFT_DIR)
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "outputs", "rl_fast_rollouts"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "fast_rollouts_rl.png"))
    parser.add_argument("--merge", nargs="+", help="Only plot and tabulate the runs of these summary.json files.")
    args = parser.parse_args()
    if args.merge:
        summaries = [json.load(open(path)) for path in args.merge]
        report([r for s in summaries for r in s["runs"]], summaries[0]["start"], args.plot)
        return

    from transformers.utils import logging

    logging.disable_progress_bar()
    begin = time.perf_counter()
    model, tokenizer = sft_model(args.sft_dir, threads=torch.get_num_threads())
    start = held_out(model, tokenizer, args)
    print(f"SFT start: held-out char accuracy {start['eval_char_accuracy']:.3f}, exact match "
          f"{start['eval_exact_match']:.3f}", flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    summary_path = os.path.join(args.output_dir, "summary.json")
    runs = []
    for seed in args.seeds:  # seeds outermost: an interrupted run still has every setting of the first seeds
        for setting in args.settings:
            run = rl_run(args, setting, seed)
            runs.append(run)
            tail = run["reward"][-10:]
            rollouts = sum(run["generation_seconds"])
            print(f"{setting:<10} seed {seed}: {run['seconds']:.0f} s, rollouts {rollouts:.0f} s, "
                  f"reward first 5 {sum(run['reward'][:5]) / 5:.3f} last 10 {sum(tail) / len(tail):.3f}, held-out "
                  f"char acc {run['eval_char_accuracy']:.3f}, exact {run['eval_exact_match']:.3f}", flush=True)
            with open(summary_path, "w") as f:
                json.dump({"args": vars(args), "start": start, "runs": runs}, f, indent=1)
    report(runs, start, args.plot)
    print(f"\nwrote {summary_path} and {args.plot} in {(time.perf_counter() - begin) / 60:.1f} minutes")


if __name__ == "__main__":
    main()

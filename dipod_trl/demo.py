"""The offline demo (`make demo`, `dipod demo`): what DiPOD does, on a CPU, in a few minutes.

1. Build the tiny masked diffusion LM and pre-train it briefly with masked SFT on `digit_sort` (sort five digits),
   a task with verifiable answers that the project generates itself. The short SFT leaves it right about half the
   time: room for RL.
2. From that same start, RL-train with FPO and with FPO + DiPOD, several seeds each, on the exact-match reward.
3. Write `curves.png` (reward and drift gap per step, mean and spread over seeds), `summary.json`, the trained
   checkpoints, and print a summary table with the held-out greedy accuracy of every run.

Everything is built here: no download, no GPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from reward_models import exact_match_accuracy

from .config import DiPODConfig
from .evaluation import evaluate_task
from .models import build_tiny_model, build_tiny_tokenizer
from .sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig
from .tasks.digit_sort import load as load_digit_sort
from .trainer import DiPODTrainer


@dataclass
class DemoConfig:
    """Arguments of `dipod demo`. The defaults run in a few minutes on 2 CPU cores."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where checkpoints, curves and summary go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "RL seeds per method."})
    sft_steps: int = field(default=120, metadata={"help": "Masked-SFT steps before RL (short: leaves room for RL)."})
    rl_steps: int = field(default=200, metadata={"help": "RL steps per run."})
    learning_rate: float = field(default=2e-4, metadata={"help": "RL learning rate."})
    dipod_beta: float = field(default=0.05, metadata={"help": "DiPOD weight of the FPO + DiPOD runs."})
    dipod_normalization: str = field(
        default="token",
        metadata={
            "help": "Normalisation of the DiPOD term in the demo. 'token' (nats per token) keeps the term's weight "
            "independent of the completion length; with 'sequence' and dipod_beta=0.05 the tiny model collapses "
            "on this task (see the README)."
        },
    )
    num_eval_examples: int = field(default=256, metadata={"help": "Held-out examples for the accuracy column."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})


METHODS = {"FPO": 0.0, "FPO+DiPOD": None}  # None: the demo's dipod_beta


class Progress(TrainerCallback):
    """One progress bar per run, with the latest reward and drift gap, instead of Trainer's printed log dicts."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.description, leave=False, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:  # generation steps carry the reward and the monitor's gap
            self.bar.set_postfix({k.split("/")[-1]: f"{logs[k]:.3f}" for k in ("reward", "drift/gap") if k in logs})

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def quiet(trainer, description: str):
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Progress(description))
    return trainer


def pretrain(config: DemoConfig, tokenizer, path: str) -> None:
    """Masked SFT of the tiny model on digit_sort; the checkpoint every RL run starts from."""
    data = load_digit_sort("train", num_examples=config.sft_steps * 64, seed=0)
    data = data.map(lambda row: {"completion": row["answer"]})
    args = MaskedSFTConfig(
        output_dir=path,
        max_steps=config.sft_steps,
        per_device_train_batch_size=64,
        learning_rate=3e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=50,
        max_grad_norm=1.0,
        logging_steps=25,
        save_strategy="no",
        seed=0,
        max_completion_length=8,
    )
    trainer = quiet(MaskedDiffusionSFTTrainer(build_tiny_model(tokenizer), args, train_dataset=data,
                                              processing_class=tokenizer), "masked SFT")
    trainer.train()
    trainer.save_model(path)
    tokenizer.save_pretrained(path)


def rl_run(config: DemoConfig, sft_path: str, method: str, seed: int) -> dict:
    """One RL run from the SFT checkpoint; returns its per-step curves and the path of the trained model."""
    beta = config.dipod_beta if METHODS[method] is None else METHODS[method]
    out = os.path.join(config.output_dir, f"{method.lower().replace('+', '_')}_seed{seed}")
    args = DiPODConfig(
        output_dir=out,
        objective="fpo",
        dipod_beta=beta,
        dipod_normalization=config.dipod_normalization,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        max_steps=config.rl_steps,
        per_device_train_batch_size=64,
        num_generations=8,
        num_iterations=2,
        max_completion_length=8,
        block_length=4,
        diffusion_steps=8,
        temperature=1.0,
        elbo_num_samples=2,
        drift_num_orders=8,
        drift_num_sequences=32,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
    )
    train = load_digit_sort("train", num_examples=4000, seed=100 + seed)
    trainer = DiPODTrainer(
        AutoModel.from_pretrained(sft_path), exact_match_accuracy, args=args, train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(sft_path),
    )
    quiet(trainer, f"{method} seed {seed}").train()
    trainer.save_model(out)
    trainer.processing_class.save_pretrained(out)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {
        "method": method,
        "seed": seed,
        "dipod_beta": beta,
        "path": out,
        "step": [h["step"] for h in logs],
        "reward": [h["reward"] for h in logs],
        "drift_gap": [h.get("drift/gap", float("nan")) for h in logs],
    }


def accuracy(path: str, test, tokenizer) -> float:
    model = AutoModel.from_pretrained(path).eval()
    summary = evaluate_task(model, tokenizer, test, exact_match_accuracy, gen_length=8, block_length=4, steps=8,
                            batch_size=128, progress=False)
    return summary["accuracy"]


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1): i + 1] if not math.isnan(v)]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out


def plot(runs: list[dict], sft_accuracy: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"FPO": "tab:blue", "FPO+DiPOD": "tab:orange"}
    for method, color in colors.items():
        group = [r for r in runs if r["method"] == method]
        if not group:
            continue
        steps = group[0]["step"]
        for ax, key in zip(axes, ("reward", "drift_gap")):
            curves = np.array([_smooth(r[key]) for r in group])
            mean = np.nanmean(curves, axis=0)
            for curve in curves:
                ax.plot(steps, curve, color=color, alpha=0.25, linewidth=0.8)
            label = f"{method} (beta={group[0]['dipod_beta']}, {len(group)} seeds)"
            ax.plot(steps, mean, color=color, linewidth=2, label=label)
    axes[0].axhline(sft_accuracy, color="gray", linestyle="--", linewidth=1, label="SFT start (greedy, held out)")
    axes[0].set(title="reward (exact match, sampled at T=1)", xlabel="RL step", ylabel="mean reward", ylim=(0, 1))
    axes[1].set(title="drift gap: importance-weighted order bound - ELBO", xlabel="RL step",
                ylabel="nats per completion")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("digit_sort on the tiny masked diffusion LM (curves: 10-step moving average; thin: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _second_half_mean(values: list[float]) -> float:
    kept = [v for v in values[len(values) // 2:] if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def summarize(runs: list[dict], sft_accuracy: float) -> str:
    tail = _second_half_mean
    lines = [f"SFT start: held-out greedy accuracy {sft_accuracy:.3f}", "",
             "reward and drift gap: means over the second half of each run; held-out accuracy: greedy, at the end", "",
             f"{'method':<12}{'seed':>5}{'reward':>10}{'drift gap':>12}{'held-out acc':>14}"]
    for r in runs:
        lines.append(f"{r['method']:<12}{r['seed']:>5}{tail(r['reward']):>10.3f}{tail(r['drift_gap']):>12.4f}"
                     f"{r['accuracy']:>14.3f}")
    lines.append("")
    for method in METHODS:
        group = [r for r in runs if r["method"] == method]
        if group:
            mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
            accs = [r["accuracy"] for r in group]
            spread = (sum((a - mean(accs)) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
            reward = mean([tail(r["reward"]) for r in group])
            lines.append(f"{method:<12} mean over {len(group)} seeds: reward {reward:.3f}, "
                         f"drift gap {mean([tail(r['drift_gap']) for r in group]):.4f}, "
                         f"held-out accuracy {mean(accs):.3f} +- {spread:.3f}")
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> dict:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars; the runs have their own
    if config.threads:
        torch.set_num_threads(config.threads)
    os.makedirs(config.output_dir, exist_ok=True)
    start = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    sft_path = os.path.join(config.output_dir, "sft")
    print(f"[1/3] masked SFT of the tiny model on digit_sort ({config.sft_steps} steps)")
    pretrain(config, tokenizer, sft_path)
    test = load_digit_sort("test", num_examples=config.num_eval_examples, seed=0)
    sft_accuracy = accuracy(sft_path, test, tokenizer)
    print(f"      held-out greedy accuracy after SFT: {sft_accuracy:.3f}")

    print(f"[2/3] RL from the SFT checkpoint: {', '.join(METHODS)} x seeds {config.seeds} ({config.rl_steps} steps)")
    runs = []
    for method in METHODS:
        for seed in config.seeds:
            run = rl_run(config, sft_path, method, seed)
            run["accuracy"] = accuracy(run["path"], test, tokenizer)
            runs.append(run)

    print("[3/3] curves and summary")
    curves = os.path.join(config.output_dir, "curves.png")
    plot(runs, sft_accuracy, curves)
    table = summarize(runs, sft_accuracy)
    summary = {"config": asdict(config), "sft_accuracy": sft_accuracy, "runs": runs,
               "seconds": time.perf_counter() - start}
    with open(os.path.join(config.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(table)
    print(f"\nwrote {curves} and {os.path.join(config.output_dir, 'summary.json')} "
          f"in {summary['seconds'] / 60:.1f} minutes")
    return summary

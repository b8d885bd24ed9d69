"""The offline demo (`make demo`, `dipod demo`): what DiPOD does, on a CPU, in a few minutes.

1. Build the tiny masked diffusion LM and pre-train it briefly with masked SFT on `digit_sort` (sort five digits),
   a task with verifiable answers that the project generates itself. The short SFT leaves it right about half the
   time: room for RL.
2. RL working: from that start, FPO + DiPOD (the default objective and `dipod_beta`) next to plain FPO, five seeds
   each, on the exact-match reward, in the steady regime of `benchmarks/double_drift.py` (2 inner iterations, 2
   antithetic ELBO samples, learning rate 2e-4): held-out accuracy rises far beyond the seeds' spread.
3. The drift regime: from the same start, SPG and SPG + DiPOD where the sweep found the surrogate drifting (12 inner
   iterations per generation batch, one plain Monte-Carlo ELBO sample, learning rate 5e-4): training goes wrong, and
   DiPOD holds the on-policy ELBO where plain SPG's falls.
4. Write `curves.png` (one row per part: reward, drift gap, on-policy ELBO per generation batch and held-out accuracy
   per seed), `summary.json`, the trained checkpoints, and print a summary table with the held-out greedy accuracy of
   every run.

Everything is built here: no download, no GPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from reward_models import exact_match_accuracy

from ..config import DiPODConfig
from ..evaluation import evaluate_task
from ..guards.non_finite import check_finite_fields
from ..models import build_tiny_model, build_tiny_tokenizer
from ..options import DiPODTermArguments, OneSampleElboArguments, SamplerArguments
from ..sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig
from ..tasks.digit_sort import load as load_digit_sort
from ..trainer import DiPODTrainer

# Part 2's settings: the steady regime of benchmarks/double_drift.py, where RL raises held-out accuracy.
RECIPE = dict(objective="fpo", num_iterations=2, elbo_num_samples=2, elbo_estimator="antithetic", learning_rate=2e-4)


@dataclass
class DemoConfig(OneSampleElboArguments, DiPODTermArguments):
    """Arguments of `dipod demo`. The defaults run in a few minutes on 2 CPU cores: first the steady recipe (FPO vs
    FPO + DiPOD, `RECIPE`, for `recipe_generation_batches`), then the regime where the surrogate drifts on this model
    (the fields below: SPG, 12 inner iterations, 1 Monte-Carlo ELBO sample, lr 5e-4)."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where checkpoints, curves and summary go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "RL seeds per method."})
    recipe_generation_batches: int = field(
        default=10,
        metadata={"help": "Generation batches per run of the first part (FPO vs FPO + DiPOD in the steady regime: 2 "
                  "inner iterations, 2 antithetic ELBO samples, lr 2e-4); 0 skips it."},
    )
    sft_steps: int = field(default=120, metadata={"help": "Masked-SFT steps before RL (short: leaves room for RL)."})
    objective: str = field(default="spg", metadata={"help": "Base objective: 'spg' or 'fpo' (the paper's two)."})
    generation_batches: int = field(
        default=10,
        metadata={"help": "Generation batches per RL run; each is optimised for num_iterations steps."},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "RL learning rate."})
    num_iterations: int = field(
        default=12, metadata={"help": "Inner iterations per generation batch (the release: 12 for FPO, 4 for SPG)."}
    )
    dipod_normalization: str = field(
        default="token",
        metadata={
            "help": "Normalisation of the DiPOD term in the demo. 'token' (nats per token) keeps the term's weight "
            "independent of the completion length; with 'sequence' and dipod_beta=0.05 the tiny model collapses "
            "on this task (see docs/results.md)."
        },
    )
    num_eval_examples: int = field(default=256, metadata={"help": "Held-out examples for the accuracy column."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})

    def __post_init__(self):
        check_finite_fields(self)
        if self.objective not in ("fpo", "spg"):
            raise ValueError(f"objective: the demo compares 'fpo' or 'spg' with and without DiPOD, not "
                             f"{self.objective!r}.")
        self.check_elbo_sampling()
        self.check_dipod_term()  # the weight of the + DiPOD runs
        for name in ("generation_batches", "num_iterations", "sft_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.recipe_generation_batches < 0:
            raise ValueError(f"recipe_generation_batches must be >= 0 (0 skips the first part), got "
                             f"{self.recipe_generation_batches}.")


def recipe_config(config: DemoConfig) -> DemoConfig:
    """The first part's settings: `config` with the steady recipe, its runs under OUTPUT_DIR/recipe."""
    return replace(config, **RECIPE, generation_batches=config.recipe_generation_batches,
                   output_dir=os.path.join(config.output_dir, "recipe"))


def methods(config: DemoConfig) -> dict[str, float]:
    """The two methods the demo compares, by label: the base objective and the same objective + DiPOD."""
    base = config.objective.upper()
    return {base: 0.0, f"{base}+DiPOD": config.dipod_beta}


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


def rl_run(config: DemoConfig, sft_path: str, method: str, seed: int, out: str | None = None, **overrides) -> dict:
    """One RL run from the SFT checkpoint; returns its per-step curves and the path of the trained model.

    `overrides` replace the `DiPODConfig` values built from `config` (benchmarks/double_drift.py sets `dipod_beta`)."""
    beta = overrides.pop("dipod_beta", None)
    beta = methods(config)[method] if beta is None else beta
    out = out or os.path.join(config.output_dir, f"{method.lower().replace('+', '_')}_seed{seed}")
    values = dict(
        output_dir=out,
        objective=config.objective,
        dipod_beta=beta,
        dipod_normalization=config.dipod_normalization,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        max_steps=config.generation_batches * config.num_iterations,
        per_device_train_batch_size=64,
        num_generations=8,
        num_iterations=config.num_iterations,
        max_completion_length=8,
        block_length=4,
        diffusion_steps=8,
        temperature=1.0,
        elbo_num_samples=config.elbo_num_samples,
        elbo_estimator=config.elbo_estimator,
        drift_num_orders=8,
        drift_num_sequences=32,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
    )
    args = DiPODConfig(**{**values, **overrides})
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
        "drift_elbo": [h.get("drift/elbo", float("nan")) for h in logs],
    }


def accuracy(path: str, test, tokenizer) -> float:
    model = AutoModel.from_pretrained(path).eval()
    summary = evaluate_task(model, tokenizer, test, exact_match_accuracy, gen_length=8, steps=8,
                            sampler=SamplerArguments(block_length=4), batch_size=128, progress=False)
    return summary["accuracy"]


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1): i + 1] if not math.isnan(v)]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out


def regime(config: DemoConfig) -> str:
    """The RL settings of a part, in words."""
    estimator = {"mc": "Monte-Carlo", "antithetic": "antithetic"}.get(config.elbo_estimator, config.elbo_estimator)
    return (f"{config.objective.upper()}: {config.num_iterations} inner iterations, {config.elbo_num_samples} "
            f"{estimator} ELBO sample{'s' if config.elbo_num_samples > 1 else ''}, lr {config.learning_rate:g}, "
            f"{config.generation_batches} generation batches")


def plot(parts: list[tuple[str, list[dict]]], sft_accuracy: float, path: str) -> None:
    """One row per part (title, runs): reward, drift gap and on-policy ELBO per generation batch, one colour per
    method (thick: mean over seeds; thin: seeds), then each seed's held-out greedy accuracy next to the SFT start's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig = plt.figure(figsize=(20, 4.6 * len(parts)), layout="constrained")
    for subfig, (title, runs) in zip(np.atleast_1d(fig.subfigures(len(parts), 1)), parts):
        subfig.suptitle(title, fontweight="bold")
        row = subfig.subplots(1, 4)
        labels = list(dict.fromkeys(r["method"] for r in runs))
        for i, (method, color) in enumerate(zip(labels, ("tab:blue", "tab:orange"))):
            group = [r for r in runs if r["method"] == method]
            batches = np.arange(1, len(group[0]["reward"]) + 1)
            for ax, key in zip(row, ("reward", "drift_gap", "drift_elbo")):
                curves = np.array([_smooth(r[key], window=5) for r in group])
                for curve in curves:
                    ax.plot(batches, curve, color=color, alpha=0.25, linewidth=0.8)
                label = f"{method} (beta={group[0]['dipod_beta']}, {len(group)} seeds)"
                ax.plot(batches, np.nanmean(curves, axis=0), color=color, linewidth=2, label=label)
            accs = np.array([r["accuracy"] for r in group])
            row[3].scatter(i + np.linspace(-0.12, 0.12, len(accs)), accs, color=color, alpha=0.6)
            row[3].errorbar(i + 0.3, accs.mean(), yerr=accs.std(ddof=1) if len(accs) > 1 else 0, color=color,
                            marker="o", markersize=8, capsize=5, label=f"{method}: {accs.mean():.3f}")
        for ax in (row[0], row[3]):
            ax.axhline(sft_accuracy, color="gray", linestyle="--", linewidth=1,
                       label=f"SFT start (greedy, held out): {sft_accuracy:.3f}")
        row[0].set(title="reward (exact match, sampled at T=1)", xlabel="generation batch",
                   ylabel="mean reward", ylim=(0, 1))
        row[1].set(title="drift gap: importance-weighted order bound - ELBO", xlabel="generation batch",
                   ylabel="nats per completion")
        row[2].set(title="ELBO of on-policy completions", xlabel="generation batch", ylabel="nats per completion")
        row[3].set(title="held-out greedy accuracy at the end", ylabel="seeds (dots), mean ± sd", ylim=(0, 1),
                   xticks=range(len(labels)), xticklabels=labels, xlim=(-0.5, len(labels) - 0.3))
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("digit_sort on the tiny masked diffusion LM, every run from the same SFT checkpoint "
                 "(5-batch moving averages; thin: seeds)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def quarter_mean(values: list[float], last: bool = True) -> float:
    """Mean over the first or the last quarter of a run's steps (NaN steps skipped)."""
    cut = max(1, len(values) // 4)
    kept = [v for v in (values[-cut:] if last else values[:cut]) if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def summarize(runs: list[dict], sft_accuracy: float) -> str:
    first, last = (lambda xs: quarter_mean(xs, last=False)), quarter_mean
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = [f"SFT start: held-out greedy accuracy {sft_accuracy:.3f}", "",
             "reward: mean over the last quarter of each run; drift gap: first quarter -> last quarter (nats per "
             "completion); held-out accuracy: greedy, at the end", "",
             f"{'method':<12}{'seed':>5}{'reward':>10}{'drift gap':>18}{'held-out acc':>14}"]
    for r in runs:
        gap = f"{first(r['drift_gap']):.3f} -> {last(r['drift_gap']):.3f}"
        lines.append(f"{r['method']:<12}{r['seed']:>5}{last(r['reward']):>10.3f}{gap:>18}{r['accuracy']:>14.3f}")
    lines.append("")
    for method in dict.fromkeys(r["method"] for r in runs):
        group = [r for r in runs if r["method"] == method]
        accs = [r["accuracy"] for r in group]
        spread = (sum((a - mean(accs)) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
        reward = mean([last(r["reward"]) for r in group])
        lines.append(f"{method:<12} mean over {len(group)} seeds: reward {reward:.3f}, "
                     f"drift gap {mean([first(r['drift_gap']) for r in group]):.3f} -> "
                     f"{mean([last(r['drift_gap']) for r in group]):.3f}, on-policy ELBO "
                     f"{mean([first(r['drift_elbo']) for r in group]):.2f} -> "
                     f"{mean([last(r['drift_elbo']) for r in group]):.2f}, "
                     f"held-out accuracy {mean(accs):.3f} +- {spread:.3f}")
    return "\n".join(lines)


def headline(runs: list[dict], sft_accuracy: float) -> str:
    """Per method: held-out accuracy against the SFT start's, and whether every seed ended above it."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in runs):
        accs = [r["accuracy"] for r in runs if r["method"] == method]
        mean = sum(accs) / len(accs)
        spread = (sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
        verdict = ("every seed above the start" if min(accs) > sft_accuracy
                   else f"{sum(a <= sft_accuracy for a in accs)} of {len(accs)} seeds not above the start")
        lines.append(f"{method:<12} held-out accuracy {sft_accuracy:.3f} -> {mean:.3f} +- {spread:.3f} (sd over "
                     f"{len(accs)} seeds, lowest {min(accs):.3f}): {mean - sft_accuracy:+.3f}, {verdict}")
    return "\n".join(lines)


def run_part(config: DemoConfig, sft_path: str, test, tokenizer) -> list[dict]:
    """Both methods of `config`, every seed, from the SFT checkpoint; each run with its held-out accuracy."""
    runs = []
    for method in methods(config):
        for seed in config.seeds:
            run = rl_run(config, sft_path, method, seed)
            run["accuracy"] = accuracy(run["path"], test, tokenizer)
            runs.append(run)
    return runs


def run_demo(config: DemoConfig) -> dict:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars; the runs have their own
    if config.threads:
        torch.set_num_threads(config.threads)
    os.makedirs(config.output_dir, exist_ok=True)
    start = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    sft_path = os.path.join(config.output_dir, "sft")
    print(f"[1/4] masked SFT of the tiny model on digit_sort ({config.sft_steps} steps)")
    pretrain(config, tokenizer, sft_path)
    test = load_digit_sort("test", num_examples=config.num_eval_examples, seed=0)
    sft_accuracy = accuracy(sft_path, test, tokenizer)
    print(f"      held-out greedy accuracy after SFT: {sft_accuracy:.3f}")

    parts = []
    if config.recipe_generation_batches:
        recipe = recipe_config(config)
        print(f"[2/4] RL working: {', '.join(methods(recipe))} x seeds {config.seeds} from the SFT checkpoint "
              f"({regime(recipe)})")
        parts.append(("RL working. " + regime(recipe), run_part(recipe, sft_path, test, tokenizer)))
    else:
        print("[2/4] RL working: skipped (recipe_generation_batches=0)")
    print(f"[3/4] the drift regime: {', '.join(methods(config))} x seeds {config.seeds} from the SFT checkpoint "
          f"({regime(config)})")
    parts.append(("Drift regime. " + regime(config), run_part(config, sft_path, test, tokenizer)))

    print("[4/4] curves and summary")
    curves = os.path.join(config.output_dir, "curves.png")
    plot(parts, sft_accuracy, curves)
    recipe_runs = parts[0][1] if config.recipe_generation_batches else []
    runs = parts[-1][1]
    summary = {"config": asdict(config), "sft_accuracy": sft_accuracy, "recipe_runs": recipe_runs, "runs": runs,
               "seconds": time.perf_counter() - start}
    with open(os.path.join(config.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for title, part_runs in parts:
        print(f"\n== {title}\n{summarize(part_runs, sft_accuracy)}")
    if recipe_runs:
        print(f"\nRL working ({regime(recipe_config(config))}):\n{headline(recipe_runs, sft_accuracy)}")
    print(f"\nwrote {curves} and {os.path.join(config.output_dir, 'summary.json')} "
          f"in {summary['seconds'] / 60:.1f} minutes")
    return summary

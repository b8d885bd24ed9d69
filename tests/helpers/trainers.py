"""Trainers on the tiny model: the recipe and command-line arguments of a fast run, a prompt dataset, reward
functions with spread, and a trainer factory."""

import os

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from tests.helpers.models import make_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")
FAST = ["--model_name_or_path", "tiny", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--drift_num_orders", "0", "--logging_steps", "1", "--disable_tqdm", "true", "--save_steps", "1"]



def prompts_dataset(n=16):
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": f"{i}{(3 * i) % 10}{(7 * i) % 10}"}] for i in range(n)],
            "answer": [str(i % 10) for i in range(n)],
        }
    )


def count_sevens(completions, **kwargs):
    """Share of completion characters that are '7': a reward a random tiny model can learn quickly."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("7") / max(len(t), 1) for t in texts]


def text_hash(completions, **kwargs):
    """A deterministic score with spread across any completions, so that every batch carries advantages."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [(sum(map(ord, t)) % 7) / 7 for t in texts]


# The fields every trainer test on the tiny model sets: 8-token completions in 2 blocks, groups of 4, no saves or logs.
TINY_RUN = dict(max_completion_length=8, block_length=4, diffusion_steps=8, num_generations=4,
                per_device_train_batch_size=8, report_to="none", save_strategy="no", disable_tqdm=True)


def tiny_run_config(output_dir, **overrides):
    """A `DiPODConfig` of `TINY_RUN` writing to `output_dir`, with `overrides`."""
    from dipod_trl import DiPODConfig

    return DiPODConfig(**{**TINY_RUN, "output_dir": str(output_dir), **overrides})


def make_trainer(tokenizer, tmp_path, reward=count_sevens, model=None, dataset=None, eval_dataset=None, **overrides):
    from dipod_trl import DiPODTrainer  # on first use: most tests need no trainer

    config = dict(max_steps=2, learning_rate=1e-3, logging_steps=1, seed=0, drift_num_orders=2, drift_num_sequences=2)
    config.update(overrides)
    model = model if model is not None else make_tiny_model(
        len(tokenizer), seed=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.05,
    ).train()
    return DiPODTrainer(
        model, reward, args=tiny_run_config(tmp_path / "run", **config), train_dataset=dataset or prompts_dataset(),
        eval_dataset=eval_dataset, processing_class=tokenizer,
    )


def generation_batch(trainer):
    """One generation batch as the trainer builds it (rewards, advantages, masks, old/reference scores)."""
    trainer.model.train()
    batch_size = trainer.args.per_device_train_batch_size
    rows = [trainer.train_dataset[i // trainer.num_generations] for i in range(batch_size)]
    return trainer._generate_and_score_completions(rows)


def gradients(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def assert_base_loss_and_exact_dipod_term(trainer, model, inputs, independent_loss, beta: float = 0.05):
    """`trainer.compute_loss` at `dipod_beta=0` equals `independent_loss(model, inputs)` (the base objective written
    out by the test; loss and every gradient entry to 1e-6, in float64), and at `dipod_beta=beta` it moves by exactly
    `-beta` times DiPOD's term on the on-policy ELBOs `independent_loss` returns with their lengths (batch mean, or
    per token under token normalisation), gradients included."""
    assert inputs["advantages"].abs().sum() > 0, "the test needs a batch with a learning signal"
    trainer.args.dipod_beta = 0.0
    model.zero_grad()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grad = gradients(model).clone()
    model.zero_grad()
    expected, _, _ = independent_loss(model, inputs)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(grad, gradients(model), atol=1e-6)

    trainer.args.dipod_beta = beta
    model.zero_grad()
    with_dipod = trainer.compute_loss(model, inputs)
    with_dipod.backward()
    grad_dipod = gradients(model).clone()
    model.zero_grad()
    _, on_policy, lengths = independent_loss(model, inputs)
    term = on_policy.mean() if trainer.args.dipod_normalization == "sequence" else on_policy.sum() / lengths.sum()
    term.backward()
    assert (with_dipod - loss).item() == pytest.approx(-beta * term.item(), abs=1e-6)
    difference = (grad_dipod - grad + beta * gradients(model)).abs().max().item()
    assert difference < 1e-6, difference


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after `step` optimizer steps (after the checkpoint is written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True

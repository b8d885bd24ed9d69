"""Trainers on the tiny model: the recipe and command-line arguments of a fast run, a prompt dataset, reward
functions with spread, a trainer factory, and each base objective written out independently of the trainer."""

import os

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

import dipod_trl
from dipod_trl.masks import MaskDraw
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


def independent_scores(model, inputs, iteration, objective, block_length=None):
    """The estimates the trainer's loss uses at inner `iteration`, from the batch's stored masks through the public
    API: per-token one-step log-probabilities for diffu_grpo, the ELBO otherwise. A block-causal model needs the
    trainer's `block_length` (4 in `make_trainer`, which is not every model's default)."""
    draw = MaskDraw(*(inputs[k][:, iteration] if k in inputs else None
                      for k in ("mask_completion", "mask_weights", "mask_prompt", "mask_context")))
    args = (model, inputs["prompt_ids"], inputs["completion_ids"])
    kwargs = dict(completion_mask=inputs["completion_mask"], attention_mask=inputs["prompt_mask"], draw=draw,
                  block_length=block_length)
    if objective == "diffu_grpo":
        return dipod_trl.likelihood.one_step_token_logps(*args, **kwargs), draw
    return dipod_trl.elbo(*args, **kwargs), draw


def independent_loss(model, inputs, objective, eps=0.2, kl_beta=0.0, eubo_beta=1.5, kl_estimator="k3",
                     block_length=None):
    """The base objective written out per sequence/token, from `independent_scores`; returns the loss, the on-policy
    scores and the completion lengths. SPG's upper bound takes each mask's weight per token where the draw has
    per-token weights (a block-causal draw weighs each token by L_k / l_k of its block)."""
    scores, draw = independent_scores(model, inputs, 0, objective, block_length)
    adv = inputs["advantages"].tolist()
    mask = inputs["completion_mask"]
    lengths = mask.sum(-1)
    if objective == "fpo":
        terms = []
        for j, a in enumerate(adv):
            ratio = torch.exp(scores[j] - scores[j].detach())
            terms.append(-torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a))
            if kl_beta and kl_estimator == "linear_sequence":
                terms[-1] = terms[-1] + kl_beta * (scores[j] - inputs["ref_scores"][j, 0])
            elif kl_beta:
                d = (inputs["ref_scores"][j, 0] - scores[j]) / lengths[j]
                terms[-1] = terms[-1] + kl_beta * (torch.exp(d) - d - 1)
        return torch.stack(terms).mean(), scores, lengths
    if objective == "diffu_grpo":
        total = 0.0
        for j, a in enumerate(adv):
            for t in range(mask.shape[1]):
                if mask[j, t]:
                    ratio = torch.exp(scores[j, t] - scores[j, t].detach())
                    total = total - torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
        return total / mask.sum(), scores.sum(-1), lengths
    # spg: ELBO per token for A > 0, the EUBO per token for A < 0, length-weighted
    token_logps = dipod_trl.likelihood.masked_token_logps(
        model, inputs["prompt_ids"], inputs["completion_ids"], draw,
        completion_mask=mask, attention_mask=inputs["prompt_mask"], block_length=block_length,
    )
    per_token_weights = draw.weights.dim() == 3
    total = 0.0
    for j, a in enumerate(adv):
        if a > 0:
            score = scores[j] / lengths[j]
        else:
            per_token = []
            for i in range(mask.shape[1]):
                hits = [k for k in range(draw.num_samples) if draw.completion_masks[j, k, i]]
                if hits:
                    weights = draw.weights[j, :, i] if per_token_weights else draw.weights[j]  # (K,)
                    avg = sum(weights[k] * torch.exp(eubo_beta * token_logps[j, k, i]) for k in hits)
                    per_token.append(torch.log(avg / draw.num_samples) / eubo_beta)
            score = torch.stack(per_token).mean()
        total = total - lengths[j] * a * score
    return total / lengths.sum(), scores, lengths


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

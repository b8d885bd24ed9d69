"""ESPO and the GDPO-style objective: the release's loss written out independently, on fixed inputs and on the
trainer's generation batch, and DiPOD's exact contribution (`dipod_beta = 0` is the base objective)."""

import math
from types import SimpleNamespace

import pytest
import torch

import dipod_trl
from dipod_trl.likelihood import MaskDraw
from dipod_trl.objectives import ESPO, GDPO, LossInputs
from tests.helpers.trainers import assert_base_loss_and_exact_dipod_term, generation_batch, make_trainer, text_hash

# Inputs recorded once: sequence ELBOs of the current, old and reference policies, advantages, completion lengths.
ELBO = [-12.5, -30.25, -7.0, -18.75, -44.0, -3.5]
OLD = [-13.0, -29.0, -8.0, -20.5, -41.0, -3.5]
REF = [-12.0, -31.5, -9.0, -18.0, -45.5, -4.0]
ADVANTAGES = [1.0, -0.5, 0.25, -1.25, 0.75, -0.25]
LENGTHS = [6, 14, 3, 9, 16, 2]
CANVAS = 16


def release_loss(elbo, old, ref, advantages, canvas, eps_low, eps_high, beta):
    """ESPO's `compute_loss` (ML-GSAI/ESPO, espo/espo_trainer.py) written out one sequence at a time:
    coef_1 = exp((logp - old) / logits_to_keep), loss = -sum_b min(coef_1 A, clamp(coef_1) A) / batch_size, plus
    beta * sum_b k2(logp - ref) / (batch_size * logits_to_keep) with k2(x) = x^2 / 2."""
    policy, kl = 0.0, 0.0
    for e, o, r, a in zip(elbo, old, ref, advantages):
        coef = math.exp((e - o) / canvas)
        policy -= min(coef * a, min(max(coef, 1 - eps_low), 1 + eps_high) * a)
        kl += (e - r) ** 2 / 2
    return policy / len(elbo) + beta * kl / (len(elbo) * canvas)


def objective_loss(objective_class, normalizer_lengths, beta):
    """The objective's loss on token log-probabilities whose single-sample ELBOs are `ELBO`."""
    args = SimpleNamespace(epsilon=0.2, epsilon_high=0.28, beta=beta, kl_estimator="k2", max_completion_length=CANVAS)
    batch = len(ELBO)
    token_logps = torch.zeros(batch, 1, CANVAS, dtype=torch.float64)
    token_logps[:, 0, 0] = torch.tensor(ELBO, dtype=torch.float64)
    draw = MaskDraw(torch.ones(batch, 1, CANVAS, dtype=torch.bool), torch.ones(batch, 1, dtype=torch.float64))
    completion_mask = (torch.arange(CANVAS) < torch.tensor(normalizer_lengths).unsqueeze(-1)).long()
    inputs = LossInputs(torch.tensor(ADVANTAGES, dtype=torch.float64), completion_mask, float(sum(LENGTHS)),
                        old_scores=torch.tensor(OLD, dtype=torch.float64),
                        ref_scores=torch.tensor(REF, dtype=torch.float64))
    return objective_class(args).loss(token_logps, draw, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_espo_loss_is_the_releases_formula_on_recorded_inputs(beta):
    out = objective_loss(ESPO, LENGTHS, beta)
    expected = release_loss(ELBO, OLD, REF, ADVANTAGES, CANVAS, 0.2, 0.28, beta)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(out.on_policy, torch.tensor(ELBO, dtype=torch.float64))
    # per token of the 16-token canvas every ratio stays inside the clip range (-8 -> -7: exp(1/16))
    assert out.metrics["clip_ratio/region_mean"].item() == 0.0


def test_gdpo_normalises_each_ratio_by_its_own_length():
    out = objective_loss(GDPO, LENGTHS, 0.0)
    expected = 0.0
    for e, o, a, n in zip(ELBO, OLD, ADVANTAGES, LENGTHS):
        coef = math.exp((e - o) / n)
        expected -= min(coef * a, min(max(coef, 0.8), 1.28) * a)
    assert out.loss.item() == pytest.approx(expected / len(ELBO), abs=1e-12)
    # per token of its own 3 tokens, -8 -> -7 is exp(1/3) = 1.40 > 1.28 with a positive advantage: clipped
    assert out.metrics["clip_ratio/region_mean"].item() == pytest.approx(1 / 6)


def independent_sequence_loss(model, inputs, normalizer):
    """The sequence-ratio loss on the trainer's first inner iteration, from the public ELBO on its masks."""
    draw = MaskDraw(inputs["mask_completion"][:, 0], inputs["mask_weights"][:, 0])
    elbo = dipod_trl.elbo(model, inputs["prompt_ids"], inputs["completion_ids"],
                          completion_mask=inputs["completion_mask"], attention_mask=inputs["prompt_mask"], draw=draw)
    lengths = inputs["completion_mask"].sum(-1)
    terms = []
    for j, a in enumerate(inputs["advantages"].tolist()):
        n = normalizer if normalizer is not None else lengths[j]
        ratio = torch.exp((elbo[j] - elbo[j].detach()) / n)
        terms.append(-torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a))
    return torch.stack(terms).mean(), elbo, lengths


@pytest.mark.parametrize("objective,estimator", [("espo", "antithetic"), ("gdpo", "quadrature")])
def test_trainer_loss_is_the_base_objective_and_dipod_adds_exactly_its_term(tokenizer, tmp_path, objective,
                                                                             estimator):
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, dipod_beta=0.0,
                           elbo_num_samples=4, elbo_estimator=estimator)
    model = trainer.model.double()
    normalizer = 8.0 if objective == "espo" else None  # max_completion_length, or each completion's length
    assert trainer.args.dipod_normalization == "token"
    assert_base_loss_and_exact_dipod_term(trainer, model, generation_batch(trainer),
                                          lambda model, inputs: independent_sequence_loss(model, inputs, normalizer))


def test_gdpo_refuses_another_estimator(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="elbo_estimator='quadrature'"):
        make_trainer(tokenizer, tmp_path, objective="gdpo", elbo_estimator="antithetic")


def test_the_espo_recipe_has_the_releases_sudoku_settings():
    """recipes/espo/sudoku.yaml against ML-GSAI/ESPO's recipes/run_sudoku_llada.sh and recipes/train.yaml."""
    import os

    from trl import ModelConfig

    from dipod_trl.commands.recipe import parse_recipe
    from dipod_trl.commands.task_data import TaskArguments
    from dipod_trl.config import DiPODConfig

    recipe = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "espo", "sudoku.yaml")
    model, task, config = parse_recipe([ModelConfig, TaskArguments, DiPODConfig], [recipe, "--bf16", "false"])
    assert (task.task, config.objective, config.kl_estimator, config.beta, config.epsilon) == (
        "sudoku", "espo", "k2", 0.01, 0.2)
    assert (config.num_iterations, config.elbo_num_samples, config.elbo_estimator) == (8, 4, "antithetic")
    assert (config.learning_rate, config.weight_decay, config.max_grad_norm) == (3e-6, 0.01, 0.2)
    assert (config.num_generations, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (6, 3, 4)
    assert (config.max_completion_length, config.block_length, config.diffusion_steps) == (256, 32, 128)
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (128, 64, 0.05)
    assert config.dipod_beta == 0.05 and config.dipod_normalization == "token"

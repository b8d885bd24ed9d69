"""DiPODTrainer on a block-diffusion policy (the tiny block model): each objective's loss and gradients at
dipod_beta=0 against the same objective written out from the public block-causal estimates, DiPOD's exact term, the
FPO ratio at the first inner iteration, the refusals, and learning."""

import pytest
import torch

from dipod_trl.models import TinyBlockMDLMConfig, TinyBlockMDLMForBlockDiffusion
from tests.helpers.trainers import (
    assert_base_loss_and_exact_dipod_term,
    generation_batch,
    gradients,
    independent_loss,
    independent_scores,
    make_trainer,
    prompts_dataset,
    text_hash,
)

# The trainer's block length in `make_trainer`'s runs (not every model's default).
BLOCK = 4


def make_block_model(tokenizer, seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128, initializer_range=0.05,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config.update(overrides)
    return TinyBlockMDLMForBlockDiffusion(TinyBlockMDLMConfig(**config)).train()


def block_trainer(tokenizer, tmp_path, **overrides):
    return make_trainer(tokenizer, tmp_path, model=make_block_model(tokenizer), **overrides)


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_block_loss_and_gradient_equal_the_base_objective_and_dipod_adds_exactly_its_term(
    tokenizer, tmp_path, objective
):
    trainer = block_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, dipod_beta=0.0,
                            elbo_num_samples=4, block_length=4)
    assert trainer.block_causal
    model = trainer.model.double()
    inputs = generation_batch(trainer)
    if objective != "diffu_grpo":  # masks drawn block by block: one weight per token, L_k / l_k of its block
        assert inputs["mask_weights"].dim() == 4
    assert_base_loss_and_exact_dipod_term(
        trainer, model, inputs, lambda model, inputs: independent_loss(model, inputs, objective, block_length=BLOCK))


def test_block_scores_differ_from_full_attention_scores(tokenizer, tmp_path):
    """The trainer scores a block-causal policy block-causally: the same weights under full attention give other
    ELBOs on the same masks (so the equality above is not the full-attention path twice)."""
    trainer = block_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", elbo_num_samples=4)
    inputs = generation_batch(trainer)
    block, _ = independent_scores(trainer.model, inputs, 0, "fpo", block_length=BLOCK)
    full_attention = make_trainer(tokenizer, tmp_path / "full", reward=text_hash, objective="fpo").model
    full_attention.load_state_dict(trainer.model.state_dict())
    full, _ = independent_scores(full_attention, inputs, 0, "fpo", block_length=BLOCK)
    assert (block - full).abs().max() > 1e-3


def test_ratio_is_exactly_one_at_the_first_inner_iteration(tokenizer, tmp_path):
    trainer = block_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", num_iterations=2, beta=0.04)
    inputs = generation_batch(trainer)
    assert "old_scores" in inputs and "ref_scores" in inputs
    trainer._step = 0
    trainer.compute_loss(trainer.model, inputs)
    assert trainer._metrics["train"]["ratio/mean"][-1] == 1.0
    assert trainer._metrics["train"]["kl"][-1] == 0.0


def test_block_random_masking_is_refused_with_its_reason(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="block_random.*already is the block-by-block ELBO"):
        block_trainer(tokenizer, tmp_path, objective="spg", elbo_estimator="block_random")


def test_the_drift_monitor_follows_block_orders(tokenizer, tmp_path):
    trainer = block_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", drift_num_orders=4)
    generation_batch(trainer)  # order_log_likelihoods refuses an order that jumps blocks
    gap = trainer._metrics["train"]["drift/gap"][-1]
    assert gap >= 0


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_a_short_block_run_raises_the_reward(tokenizer, tmp_path, objective):
    trainer = make_trainer(
        tokenizer, tmp_path, model=make_block_model(tokenizer), objective=objective, max_steps=30,
        learning_rate=1e-2, per_device_train_batch_size=16, num_generations=8, logging_steps=1, dipod_beta=0.05,
        dataset=prompts_dataset(64), drift_num_orders=0,
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    before, after = rewards[0], sum(rewards[-5:]) / 5
    print(f"{objective} (block-causal): reward {before:.3f} -> {after:.3f}")
    # As for the full-attention model: from < 0.1 to > 0.5 is more than 7 standard errors of an 80-reward mean.
    assert before < 0.1 and after > 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Tiny SDAR-, SDAR-MoE- and LLaDA2-shaped policies (the native classes, random weights, the tiny tokenizer)
# ---------------------------------------------------------------------------------------------------------------------

FAMILIES = ["sdar", "sdar_moe", "llada2"]


def family_model(tokenizer, family, **overrides):
    from tests.helpers.block_models import make_tiny_block_model

    ids = dict(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    return make_tiny_block_model(family, vocab_size=len(tokenizer), **ids, **overrides).train()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_family_loss_and_gradient_equal_the_base_objective(tokenizer, tmp_path, family, objective):
    trainer = make_trainer(tokenizer, tmp_path, model=family_model(tokenizer, family), reward=text_hash,
                           objective=objective, dipod_beta=0.0, elbo_num_samples=4)
    assert trainer.block_causal
    model = trainer.model.double()
    inputs = generation_batch(trainer)
    assert inputs["advantages"].abs().sum() > 0
    model.zero_grad()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grad = gradients(model).clone()
    model.zero_grad()
    expected, _, _ = independent_loss(model, inputs, objective, block_length=BLOCK)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert (grad - gradients(model)).abs().max().item() < 1e-6


@pytest.mark.parametrize("family", ["sdar_moe", "llada2"])
def test_moe_ratio_is_exactly_one_at_the_first_inner_iteration(tokenizer, tmp_path, family):
    """Routing is recomputed in every forward from the current weights: the old ELBOs (scored at generation time) and
    the current ones use the same experts, so FPO's ratio is exactly 1 before the first update."""
    trainer = make_trainer(tokenizer, tmp_path, model=family_model(tokenizer, family), reward=text_hash,
                           objective="fpo", num_iterations=2, beta=0.04, elbo_num_samples=4)
    inputs = generation_batch(trainer)
    assert "old_scores" in inputs
    trainer._step = 0
    current, _ = independent_scores(trainer.model, inputs, 0, "fpo", block_length=BLOCK)
    assert torch.equal(torch.exp(current - inputs["old_scores"][:, 0]), torch.ones_like(current))
    trainer.compute_loss(trainer.model, inputs)
    assert trainer._metrics["train"]["ratio/mean"][-1] == 1.0
    assert trainer._metrics["train"]["kl"][-1] == 0.0


# FPO on the SDAR-shaped model stalls at 1e-2 (reward 0 throughout); 5e-3 for 40 steps learns
@pytest.mark.parametrize("family,objective,learning_rate,steps",
                         [("sdar", "fpo", 5e-3, 40), ("llada2", "spg", 1e-2, 30)])
def test_a_short_family_run_raises_the_reward(tokenizer, tmp_path, family, objective, learning_rate, steps):
    trainer = make_trainer(
        tokenizer, tmp_path, model=family_model(tokenizer, family, initializer_range=0.02), objective=objective,
        max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=16, num_generations=8,
        logging_steps=1, dipod_beta=0.05, dataset=prompts_dataset(64), drift_num_orders=0,
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    before, after = rewards[0], sum(rewards[-5:]) / 5
    print(f"{family} {objective}: reward {before:.3f} -> {after:.3f}")
    assert before < 0.1 and after > 0.5

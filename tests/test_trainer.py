"""DiPODTrainer: each objective against an independent computation, DiPOD's exact contribution, the FPO ratio at the
first inner iteration, learning, resumption and clear errors on bad input."""

import math

import pytest
import torch
from datasets import Dataset

import dipod_trl
from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.trainer import RewardFunctionError
from tests.helpers.models import make_tiny_model, sequential_order_probability
from tests.helpers.trainers import (
    StopAt,
    assert_base_loss_and_exact_dipod_term,
    count_sevens,
    generation_batch,
    independent_loss,
    independent_scores,
    make_trainer,
    prompts_dataset,
    text_hash,
    tiny_run_config,
)


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_loss_and_gradient_equal_the_base_objective_and_dipod_adds_exactly_its_term(tokenizer, tmp_path, objective):
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, dipod_beta=0.0,
                           elbo_num_samples=4)
    model = trainer.model.double()  # float64, so that "equal" can mean within 1e-6 on every gradient entry
    expected_normalization = "sequence" if objective == "fpo" else "token"
    assert trainer.args.dipod_normalization == expected_normalization
    assert_base_loss_and_exact_dipod_term(trainer, model, generation_batch(trainer),
                                          lambda model, inputs: independent_loss(model, inputs, objective))


@pytest.mark.parametrize(
    "objective,overrides",
    [
        ("fpo", dict(beta=0.1, kl_estimator="linear_sequence")),
        ("spg", dict(elbo_estimator="block_random")),
        ("diffu_grpo", dict(one_step_masks="completion")),
    ],
)
def test_the_release_options_give_the_loss_written_out_independently(tokenizer, tmp_path, objective, overrides):
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, dipod_beta=0.0,
                           elbo_num_samples=4, **overrides)
    with torch.no_grad():  # move the policy away from the reference, so that the KL term is not zero
        for p in trainer.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    inputs = generation_batch(trainer)
    canvas = overrides.get("elbo_estimator") == "block_random"
    assert inputs["completion_ids"].shape[1] == (8 if canvas else inputs["completion_mask"].sum(-1).max())
    assert ("mask_context" in inputs) == canvas
    loss = trainer.compute_loss(trainer.model, inputs)
    expected, _, _ = independent_loss(trainer.model, inputs, objective, kl_beta=overrides.get("beta", 0.0),
                                      kl_estimator=overrides.get("kl_estimator", "k3"))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_diffu_grpo_scores_on_d1s_full_canvas_by_default(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective="diffu_grpo", dipod_beta=0.0)
    inputs = generation_batch(trainer)
    mask = inputs["completion_mask"]
    assert inputs["completion_ids"].shape[1] == trainer.args.max_completion_length
    assert (mask == 0).any(), "the test needs a completion that stops before the end of the canvas"
    # the whole canvas is masked: the completion (scored) and the tail after its first EOS (context)
    assert torch.equal(inputs["mask_completion"][:, 0, 0], mask.bool())
    assert torch.equal(inputs["mask_context"][:, 0, 0], ~mask.bool())
    loss = trainer.compute_loss(trainer.model, inputs)
    expected, _, _ = independent_loss(trainer.model, inputs, "diffu_grpo")
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo"])
def test_ratio_is_exactly_one_at_the_first_inner_iteration(tokenizer, tmp_path, objective):
    # num_iterations=2 with one micro-batch per step: the old scores are computed at generation time.
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, num_iterations=2, beta=0.04)
    inputs = generation_batch(trainer)
    assert "old_scores" in inputs and "ref_scores" in inputs
    trainer._step = 0
    current, _ = independent_scores(trainer.model, inputs, 0, objective)
    assert torch.equal(torch.exp(current - inputs["old_scores"][:, 0]), torch.ones_like(current))
    trainer.compute_loss(trainer.model, inputs)
    assert trainer._metrics["train"]["ratio/mean"][-1] == 1.0
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == 0.0
    assert trainer._metrics["train"]["kl"][-1] == 0.0  # the reference starts as the policy
    # The second inner iteration scores its own masks (d1's one-step draw differs in the prompt tokens it masks).
    key = "mask_prompt" if objective == "diffu_grpo" else "mask_completion"
    assert not torch.equal(inputs[key][:, 0], inputs[key][:, 1])


def test_kl_to_the_reference_uses_the_same_elbos(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", dipod_beta=0.0, beta=0.1)
    with torch.no_grad():  # move the policy away from the reference
        for p in trainer.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    inputs = generation_batch(trainer)
    loss = trainer.compute_loss(trainer.model, inputs)
    expected, _, _ = independent_loss(trainer.model, inputs, "fpo", kl_beta=0.1)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert trainer._metrics["train"]["kl"][-1] > 0


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_a_short_run_raises_the_reward(tokenizer, tmp_path, objective):
    trainer = make_trainer(
        tokenizer, tmp_path, objective=objective, max_steps=30, learning_rate=1e-2, per_device_train_batch_size=16,
        num_generations=8, logging_steps=1, dipod_beta=0.05, dataset=prompts_dataset(64), drift_num_orders=0,
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    before, after = rewards[0], sum(rewards[-5:]) / 5  # the first batch comes from the untrained model
    print(f"{objective}: reward {before:.3f} -> {after:.3f}")
    # The untrained model writes a '7' for ~1% of characters. The mean of 80 rewards in [0, 1] has a standard error
    # below 0.06, so going from < 0.1 to > 0.5 is more than 7 standard errors: learning, not luck.
    assert before < 0.1 and after > 0.5


def test_stopping_and_resuming_reproduces_the_uninterrupted_run(tokenizer, tmp_path):
    common = dict(max_steps=6, save_strategy="steps", save_steps=2, num_iterations=2, objective="fpo", beta=0.04)
    full = make_trainer(tokenizer, tmp_path / "full", **common)
    full.train()
    interrupted = make_trainer(tokenizer, tmp_path / "interrupted", **common)
    interrupted.add_callback(StopAt(4))
    interrupted.train()
    assert interrupted.state.global_step == 4
    resumed = make_trainer(tokenizer, tmp_path / "interrupted", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "run" / "checkpoint-4"))
    assert resumed.state.global_step == 6
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    untrained = make_tiny_model(len(tokenizer), seed=0, initializer_range=0.05)
    assert not torch.equal(full.model.embed_tokens.weight, untrained.embed_tokens.weight)


def answer_value(completions, answer, **kwargs):
    """The row's answer as a number: a reward whose mean over an evaluation is known without generating."""
    return [float(a) for a in answer]


def test_evaluation_during_training_scores_every_eval_prompt(tokenizer, tmp_path):
    trainer = make_trainer(
        tokenizer, tmp_path, reward=answer_value, max_steps=2, eval_strategy="steps", eval_steps=1,
        per_device_eval_batch_size=8, eval_dataset=prompts_dataset(8),
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_reward" in h]
    assert len(evals) == 2
    expected = sum(range(8)) / 8  # answers 0..7, each prompt scored num_generations times
    for logged in evals:
        assert logged["eval_reward"] == pytest.approx(expected)
        assert logged["eval_rewards/answer_value/mean"] == pytest.approx(expected)


def test_drift_monitor_logs_the_elbo_and_bound_of_its_orders(tokenizer, tmp_path):
    """The logged drift values equal the mean and the log-mean of order likelihoods computed step by step."""
    model = make_tiny_model(len(tokenizer), seed=2, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, initializer_range=0.5)
    trainer = make_trainer(tokenizer, tmp_path, model=model, drift_num_orders=3, drift_num_sequences=3)
    prompts = [tokenizer(text).input_ids for text in ("sort: 12", "sort: 345", "6")]
    padded = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    eos = tokenizer.eos_token_id
    ids = lambda text: tokenizer(text).input_ids  # noqa: E731
    completion_ids = torch.tensor([ids("7") + [eos] * 3, ids("9123"), ids("45") + [eos, eos]])
    completion_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])  # lengths 2, 4, 3
    seeds = (11, 12, 13)
    trainer._generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with torch.no_grad():
        trainer._monitor_drift(padded["input_ids"], padded["attention_mask"], completion_ids, completion_mask)
    logged = {name: trainer._metrics["train"][f"drift/{name}"][-1] for name in ("elbo", "order_bound", "gap")}

    # The orders the monitor drew: the same per-row generators, fresh.
    orders = dipod_trl.likelihood.random_orders(completion_mask, 3,
                                                [torch.Generator().manual_seed(seed) for seed in seeds])
    elbos, bounds = [], []
    for row, prompt in enumerate(prompts):
        length = int(completion_mask[row].sum())
        completion = completion_ids[row, :length].tolist()
        row_orders = orders[row, :, :length].tolist()
        assert all(sorted(order) == list(range(length)) for order in row_orders)  # valid positions first
        probabilities = [sequential_order_probability(trainer.model, prompt, completion, order,
                                                      tokenizer.mask_token_id) for order in row_orders]
        elbos.append(sum(math.log(p) for p in probabilities) / 3)
        bounds.append(math.log(sum(probabilities) / 3))
    expected_elbo, expected_bound = sum(elbos) / 3, sum(bounds) / 3
    print(f"ELBO {expected_elbo:.4f}, order bound {expected_bound:.4f}")
    assert expected_bound - expected_elbo > 0.01  # orders that disagree: a bound logged as the ELBO would show
    assert logged["elbo"] == pytest.approx(expected_elbo, abs=1e-4)
    assert logged["order_bound"] == pytest.approx(expected_bound, abs=1e-4)
    assert logged["gap"] == pytest.approx(expected_bound - expected_elbo, abs=1e-4)


def test_the_drift_monitor_runs_every_drift_every_batches_and_logs_a_consistent_gap(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, drift_num_orders=4, drift_num_sequences=4, drift_every=2, max_steps=4)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert [h["step"] for h in logs if "drift/gap" in h] == [1, 3]  # generation batches 0 and 2 of 0..3
    for h in logs:
        assert h["time/generation"] > 0 and h["time/scoring"] > 0 and h["time/update"] > 0
        if "drift/gap" in h:
            assert h["drift/gap"] >= 0
            assert h["drift/gap"] == pytest.approx(h["drift/order_bound"] - h["drift/elbo"], abs=1e-4)


def test_lora_adapters_train_and_the_base_is_the_reference(tokenizer, tmp_path):
    from peft import LoraConfig

    trainer_model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
    base = {n: p.clone() for n, p in trainer_model.named_parameters()}
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "up"])
    trainer = DiPODTrainer(
        trainer_model, count_sevens,
        args=tiny_run_config(tmp_path, max_steps=2, beta=0.04, learning_rate=1e-2, num_iterations=2, logging_steps=1),
        train_dataset=prompts_dataset(), processing_class=tokenizer, peft_config=config,
    )
    trainer.train()
    lora = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())
    for name, p in trainer.model.get_base_model().named_parameters():
        if "lora" not in name:
            assert torch.equal(p, base[name.replace("base_layer.", "")]), name
    assert [h["kl"] for h in trainer.state.log_history if "kl" in h][0] == 0.0


# ------------------------------------------------------------------ bad input


def test_a_reward_function_that_raises_names_itself_and_the_sample(tokenizer, tmp_path):
    def fragile(completions, answer, **kwargs):
        return [1.0 / int(a) for a in answer]  # answer "0" divides by zero

    trainer = make_trainer(tokenizer, tmp_path, reward=fragile)
    with pytest.raises(RewardFunctionError, match=r"'fragile' raised ZeroDivisionError.*sample \d+: prompt="):
        trainer.train()


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_none_nan_or_inf_rewards_are_errors_by_default(tokenizer, tmp_path, bad):
    def holey(completions, **kwargs):
        return [bad] + [0.5] * (len(completions) - 1)

    trainer = make_trainer(tokenizer, tmp_path, reward=holey)
    with pytest.raises(RewardFunctionError, match="'holey' returned .* sample 0"):
        trainer.train()


def test_none_rewards_are_skipped_when_asked(tokenizer, tmp_path):
    def holey(completions, **kwargs):
        return [None] + [float(i % 2) for i in range(len(completions) - 1)]

    trainer = make_trainer(tokenizer, tmp_path, reward=holey, reward_nan_policy="skip")
    trainer.train()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_dataset_without_prompt_column_is_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="no 'prompt' column"):
        make_trainer(tokenizer, tmp_path, dataset=Dataset.from_dict({"question": ["a", "b"]}))


def test_long_prompts_are_an_error_or_truncated_with_a_warning(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="max_prompt_length=5"):
        make_trainer(tokenizer, tmp_path, max_prompt_length=5).train()
    trainer = make_trainer(tokenizer, tmp_path, max_prompt_length=5, prompt_truncation="left")
    with pytest.warns(UserWarning, match="truncated on the left"):
        trainer.train()
    assert trainer.state.global_step == 2


def test_all_eos_completions_give_a_finite_zero_signal_loss(tokenizer, tmp_path):
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.no_grad():  # a model that always says <eos>
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.eos_token_id] = 1.0
        model.norm.bias.fill_(1.0)
    trainer = make_trainer(tokenizer, tmp_path, model=model.train(), objective="spg")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert logs[0]["completions/mean_length"] == 1.0
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(use_vllm=True), "vLLM does not serve masked diffusion"),
        (dict(objective="ppo"), "objective"),
        (dict(top_p=0.9), "top_p"),
        (dict(max_completion_length=10), "block_length"),
        (dict(diffusion_steps=3), "diffusion_steps"),
        (dict(elbo_num_samples=3), "even"),
        (dict(objective="spg", kl_estimator="linear_sequence"), "applies to objective='fpo' only"),
        (dict(kl_estimator="k1"), "kl_estimator"),
        (dict(elbo_estimator="block"), "elbo_estimator"),
        (dict(one_step_masks="all"), "one_step_masks"),
    ],
)
def test_config_fields_that_cannot_apply_fail_loudly(overrides, match):
    base = dict(output_dir="/tmp/unused", max_completion_length=8, block_length=4, diffusion_steps=8)
    with pytest.raises(ValueError, match=match):
        DiPODConfig(**{**base, **overrides})


def test_reward_fn_shorthand_and_hub_style_loading(tokenizer, tmp_path):
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    trainer = DiPODTrainer(
        str(tmp_path / "model"), reward_fn=count_sevens,
        args=tiny_run_config(tmp_path / "out", max_steps=1, learning_rate=1e-2),
        train_dataset=prompts_dataset(),
    )
    # the path's weights and tokenizer were loaded
    assert trainer.processing_class.get_vocab() == tokenizer.get_vocab()
    for (name, loaded), saved in zip(trainer.model.named_parameters(), model.parameters()):
        assert torch.equal(loaded, saved), name
    trainer.train()
    assert trainer.state.global_step == 1
    assert not torch.equal(trainer.model.embed_tokens.weight, model.embed_tokens.weight)


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_gradient_accumulation_reproduces_the_large_batch(tokenizer, tmp_path, objective):
    """GA=2 over micro-batches of 8 makes the same update as one batch of 16 (the same 16 completions), also where
    the loss is normalised by the number of tokens (diffu-GRPO, SPG and DiPOD's token normalisation)."""
    # Plain SGD: Adam divides by the root of tiny second moments, which would magnify float rounding in the comparison.
    common = dict(reward=text_hash, objective=objective, num_iterations=2, max_steps=2, learning_rate=0.1,
                  optim="sgd")
    large = make_trainer(tokenizer, tmp_path / "large", per_device_train_batch_size=16, **common)
    large.train()
    accumulated = make_trainer(tokenizer, tmp_path / "ga", per_device_train_batch_size=8,
                               gradient_accumulation_steps=2, **common)
    accumulated.train()
    assert accumulated.args.steps_per_generation == 2  # one generation batch of 16, split into two micro-batches
    rewards = lambda t: [h["reward"] for h in t.state.log_history if "reward" in h]  # noqa: E731
    assert rewards(large) == rewards(accumulated)
    for (name, a), b in zip(large.model.named_parameters(), accumulated.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name

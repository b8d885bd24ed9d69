"""The structured ELBO estimators (`control_variate`, `quadrature`) against brute-force enumeration on a tiny model.

`control_variate` must be unbiased for the ELBO; `quadrature` is deliberately biased: its mean must equal its own
enumerated expectation (every split of the completion into halves), which differs from the ELBO by the midpoint
rule's error.
"""

import itertools
import math

import pytest
import torch

import dipod_trl
from dipod_trl.config import DiPODConfig
from dipod_trl.likelihood import MaskDraw, draw_masks, elbo_from_token_logps, masked_token_logps
from tests.helpers.models import make_tiny_model
from tests.test_likelihood import CASES, exact_elbo, token_logps


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(8, seed=0, initializer_range=0.5)


def replicate_estimates(model, prompt, completion, estimator, num_samples, replicates=20000, seed=1):
    with torch.no_grad():
        return dipod_trl.elbo(
            model, torch.tensor([prompt] * replicates), torch.tensor([completion] * replicates),
            num_samples=num_samples, estimator=estimator, generator=torch.Generator().manual_seed(seed),
        )


def exact_halves(model, prompt, completion, split):
    """E[quadrature] at K = 2: every subset M of `split` tokens equally likely, each token scored once, in M or in
    its complement."""
    length = len(completion)
    subsets = list(itertools.combinations(range(length), split))
    total = 0.0
    for subset in subsets:
        inside = [i in subset for i in range(length)]
        first = token_logps(model, prompt, completion, inside)
        second = token_logps(model, prompt, completion, [not m for m in inside])
        total += sum(first[i] if inside[i] else second[i] for i in range(length)) / len(subsets)
    return total


@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("prompt,completion", CASES)
def test_control_variate_estimator_is_unbiased(model, prompt, completion, num_samples):
    exact = exact_elbo(model, prompt, completion)
    estimates = replicate_estimates(model, prompt, completion, "control_variate", num_samples)
    standard_error = estimates.std().item() / math.sqrt(estimates.numel())
    print(f"exact {exact:.4f}, control_variate K={num_samples} mean {estimates.mean():.4f} +- {standard_error:.4f}")
    assert abs(estimates.mean().item() - exact) < 4 * standard_error


def test_control_variate_masks_everything_once_then_weighs_tokens_to_the_elbo():
    """Sample 0 masks the whole completion; every weight sum is consistent: over the K samples, each token's
    weights add up to K (the control variate cancels in expectation), and a one-token completion is exact."""
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]])
    draw = draw_masks(completion_mask, 4, estimator="control_variate", generator=torch.Generator().manual_seed(0))
    assert draw.weights.shape == (2, 4, 6)
    assert torch.equal(draw.completion_masks[:, 0], completion_mask.bool())
    assert not draw.completion_masks[1, 1:].any() and torch.all(draw.weights[1, 1:] == 0)
    sizes = draw.completion_masks[0, 1:].sum(-1)
    assert torch.all((sizes >= 1) & (sizes <= 4))  # 1..L-1
    per_token = draw.weights.sum(1)
    assert torch.allclose(per_token, 4.0 * completion_mask.float())
    assert torch.all(draw.weights[~draw.completion_masks] == 0)


@pytest.mark.parametrize("prompt,completion", CASES)
def test_quadrature_mean_is_its_enumerated_midpoint_node_not_the_elbo(model, prompt, completion):
    exact = exact_elbo(model, prompt, completion)
    node = exact_halves(model, prompt, completion, len(completion) // 2)
    estimates = replicate_estimates(model, prompt, completion, "quadrature", 2)
    standard_error = estimates.std().item() / math.sqrt(estimates.numel())
    print(f"exact ELBO {exact:.4f}, midpoint node {node:.4f} (bias {node - exact:+.4f}), quadrature mean "
          f"{estimates.mean():.4f} +- {standard_error:.4f}")
    assert abs(estimates.mean().item() - node) < 4 * standard_error + 1e-5  # L = 2: both splits give one value


def test_quadrature_pairs_split_each_completion_into_complementary_halves():
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0]])
    draw = draw_masks(completion_mask, 6, estimator="quadrature", generator=torch.Generator().manual_seed(0))
    masks = draw.completion_masks.view(3, 3, 2, 7)
    valid = completion_mask.bool().unsqueeze(1)
    assert torch.equal(masks[:, :, 0] ^ masks[:, :, 1], valid.expand(-1, 3, -1))  # every token once per pair
    assert not (masks[:, :, 0] & masks[:, :, 1]).any()
    assert masks[0, :, 0].sum(-1).tolist() == [2, 3, 2]  # floor(L/2), then ceil in every second pair
    assert masks[1, :, 0].sum(-1).tolist() == [3, 4, 3]
    assert torch.all(draw.weights == 2.0)


@pytest.mark.parametrize("estimator", ["control_variate", "quadrature"])
def test_new_estimators_give_the_same_estimate_in_any_chunking(model, estimator):
    """Memory stays flat in K: the chunked pass scores the same draw to the same estimate, gradient included."""
    prompt, completion = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[3, 4, 5, 1], [0, 1, 2, 6]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    draw = draw_masks(completion_mask, 8, estimator=estimator, generator=torch.Generator().manual_seed(0))
    whole = dipod_trl.elbo(model, prompt, completion, completion_mask=completion_mask, draw=draw)
    chunked = dipod_trl.elbo(model, prompt, completion, completion_mask=completion_mask, draw=draw, chunk_size=3)
    assert torch.allclose(whole, chunked, atol=1e-5)
    expected = torch.zeros(2)
    for b in range(2):
        for k in range(8):
            length = int(completion_mask[b].sum())  # positions past the first EOS are not attended
            masked = draw.completion_masks[b, k, :length].tolist()
            logps = token_logps(model, prompt[b].tolist(), completion[b, :length].tolist(), masked)
            weights = draw.weights[b, k] if draw.weights.dim() == 3 else draw.weights[b, k].expand(4)
            expected[b] += sum(w * lp for w, lp, m in zip(weights.tolist(), logps, masked) if m) / 8
    assert torch.allclose(whole.detach(), expected, atol=1e-5)


def test_token_weights_multiply_each_masked_token():
    token_logps_ = torch.tensor([[[-1.0, -2.0, -4.0]]])
    draw = MaskDraw(torch.tensor([[[True, False, True]]]), torch.tensor([[[0.5, 7.0, 2.0]]]))
    assert elbo_from_token_logps(token_logps_ * draw.completion_masks, draw).item() == pytest.approx(-8.5)


def test_control_variate_needs_two_samples_and_is_refused_with_spg(model):
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        dipod_trl.elbo(model, torch.tensor([[1]]), torch.tensor([[2, 3]]), num_samples=1, estimator="control_variate")
    with pytest.raises(ValueError, match="quadrature.*must be even|must be even.*quadrature"):
        dipod_trl.elbo(model, torch.tensor([[1]]), torch.tensor([[2, 3]]), num_samples=3, estimator="quadrature")
    with pytest.raises(ValueError, match="SPG's EUBO"):
        DiPODConfig(output_dir="/tmp/unused", objective="spg", elbo_estimator="control_variate", report_to="none")


def test_masked_token_logps_are_what_the_estimators_weigh(model):
    """The draw's masks are scored as given: the estimate is the weighted masked log-probabilities of that pass."""
    prompt, completion = torch.tensor([[1, 2]]), torch.tensor([[3, 4, 5]])
    draw = draw_masks(torch.ones_like(completion), 4, estimator="control_variate",
                      generator=torch.Generator().manual_seed(2))
    logps = masked_token_logps(model, prompt, completion, draw)
    assert torch.allclose(dipod_trl.elbo(model, prompt, completion, draw=draw),
                          elbo_from_token_logps(logps, draw).mean(1), atol=1e-6)


@pytest.mark.parametrize("estimator", ["control_variate", "quadrature"])
def test_fpo_trains_on_the_new_estimators_with_the_loss_written_out_independently(tokenizer, tmp_path, estimator):
    """The trainer carries per-token weights (control_variate) through its buffers and micro-batches unchanged."""
    from tests.helpers.trainers import generation_batch, independent_loss, make_trainer, text_hash

    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", dipod_beta=0.0,
                           elbo_num_samples=4, elbo_estimator=estimator)
    inputs = generation_batch(trainer)
    assert inputs["mask_weights"].dim() == (4 if estimator == "control_variate" else 3)  # (B, iterations, K[, C])
    loss = trainer.compute_loss(trainer.model, inputs)
    expected, _, _ = independent_loss(trainer.model, inputs, "fpo")
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)

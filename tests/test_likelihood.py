"""ELBO estimators, order likelihoods and the importance-weighted bound against brute-force enumeration.

The model is a tiny randomly initialised masked diffusion LM with a vocabulary of 8 tokens (7 real ones and the
mask) and completions of length <= 4, small enough to enumerate every mask subset and every generation order.
"""

import itertools
import math

import pytest
import torch

import dipod_trl
from dipod_trl.likelihood import (
    MaskDraw,
    draw_masks,
    elbo_samples,
    masked_diffusion_sft_loss,
    masked_token_logps,
    one_step_token_logps,
    order_bound,
    order_log_likelihoods,
    random_orders,
)
from tests.helpers.models import make_tiny_model, sequential_order_probability

MASK = 7


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(8, seed=0, initializer_range=0.5)


def token_logps(model, prompt, completion, masked):
    """log p(completion_i | prompt, completion with `masked` positions masked), for every i, by one forward pass."""
    noisy = [MASK if m else t for t, m in zip(completion, masked)]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + noisy])).logits[0, len(prompt):]
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def exact_elbo(model, prompt, completion):
    """Sum over l = 1..L (probability 1/L) and every subset of size l (uniform) of (L/l) * masked log-probs."""
    length = len(completion)
    total = 0.0
    for l in range(1, length + 1):
        subsets = list(itertools.combinations(range(length), l))
        for subset in subsets:
            logps = token_logps(model, prompt, completion, [i in subset for i in range(length)])
            total += (1 / length) * (length / l) / len(subsets) * sum(logps[i] for i in subset)
    return total


CASES = [([1, 2], [3, 4, 5]), ([4], [0, 6, 2, 1]), ([2, 5, 1], [6, 6])]


@pytest.mark.parametrize("prompt,completion", CASES)
def test_monte_carlo_elbo_matches_exact_enumeration(model, prompt, completion):
    exact = exact_elbo(model, prompt, completion)
    samples = elbo_samples(
        model, torch.tensor([prompt]), torch.tensor([completion]), num_samples=20000,
        generator=torch.Generator().manual_seed(1),
    )[0]
    mean, standard_error = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    print(f"exact ELBO {exact:.4f}  MC mean {mean:.4f} +- {standard_error:.4f} (K=20000)")
    assert abs(mean - exact) < 3 * standard_error


@pytest.mark.parametrize("estimator", ["antithetic", "stratified"])
def test_variance_reduced_estimators_are_unbiased(model, estimator):
    prompt, completion = CASES[1]
    exact = exact_elbo(model, prompt, completion)
    # 10000 independent estimates, each from 2 samples (one antithetic pair, or two strata)
    estimates = dipod_trl.elbo(
        model, torch.tensor([prompt] * 10000), torch.tensor([completion] * 10000), num_samples=2,
        estimator=estimator, generator=torch.Generator().manual_seed(1),
    )
    standard_error = estimates.std().item() / math.sqrt(estimates.numel())
    assert abs(estimates.mean().item() - exact) < 3 * standard_error


@pytest.mark.parametrize("prompt,completion", CASES[:2])
def test_antithetic_pairs_have_lower_variance_than_plain_mc(model, prompt, completion):
    rows = 20000
    kwargs = dict(num_samples=2, generator=torch.Generator().manual_seed(2))
    args = (model, torch.tensor([prompt] * rows), torch.tensor([completion] * rows))
    plain = dipod_trl.elbo(*args, estimator="mc", **kwargs).var().item()
    antithetic = dipod_trl.elbo(*args, estimator="antithetic", **kwargs).var().item()
    print(f"variance of the K=2 ELBO estimate: plain MC {plain:.4f}, antithetic {antithetic:.4f}")
    # The variance of a sample variance over 20000 rows is ~1% of it: a 5% margin cannot come from noise.
    assert antithetic < 0.95 * plain


@pytest.mark.parametrize("prompt,completion", CASES)
def test_order_log_likelihoods_over_all_orders_average_to_the_exact_elbo(model, prompt, completion):
    """The batched order likelihoods, averaged over every permutation, equal the ELBO enumerated over mask subsets."""
    orders = list(itertools.permutations(range(len(completion))))
    batched = order_log_likelihoods(model, torch.tensor([prompt]), torch.tensor([completion]), torch.tensor([orders]))
    assert batched.mean().item() == pytest.approx(exact_elbo(model, prompt, completion), abs=1e-5)


@pytest.mark.parametrize("prompt,completion", CASES[:2])
def test_order_log_likelihoods_match_the_sequential_reference(model, prompt, completion):
    orders = list(itertools.permutations(range(len(completion))))
    batched = order_log_likelihoods(
        model, torch.tensor([prompt]), torch.tensor([completion]), torch.tensor([orders])
    )[0]
    reference = [math.log(sequential_order_probability(model, prompt, completion, o, MASK)) for o in orders]
    assert batched.tolist() == pytest.approx(reference, abs=1e-5)


def test_order_bound_is_the_log_mean_probability_of_the_orders_it_draws(model):
    """Each row's bound equals log((1/K) sum_k p_sigma_k(y)) over the orders drawn from the row's generator."""
    prompts = torch.tensor([[1, 2], [4, 4], [2, 5]])
    completions = torch.tensor([[3, 4, 5, 6], [0, 6, 2, 1], [6, 6, 0, 0]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    seeds = (3, 4, 5)
    bound = order_bound(model, prompts, completions, completion_mask=completion_mask, num_orders=3,
                        generator=[torch.Generator().manual_seed(s) for s in seeds])
    for row, seed in enumerate(seeds):
        length = int(completion_mask[row].sum())
        # The row's three orders, drawn again from a fresh copy of its generator: permutations of its positions.
        drawn = random_orders(completion_mask[row : row + 1], 3, [torch.Generator().manual_seed(seed)])[0]
        orders = drawn[:, :length].tolist()
        assert all(sorted(order) == list(range(length)) for order in orders)
        prompt, completion = prompts[row].tolist(), completions[row, :length].tolist()
        probabilities = [sequential_order_probability(model, prompt, completion, order, MASK) for order in orders]
        assert len({round(p, 8) for p in probabilities}) > 1  # distinct orders, so the mean is not trivial
        assert bound[row].item() == pytest.approx(math.log(sum(probabilities) / 3), abs=1e-5)


def test_sampled_order_bound_matches_its_exact_expectation_at_each_k(model):
    """Over many rows, the mean bound at K orders equals E[log mean_k p_sigma_k], enumerated over all K-tuples."""
    prompt, completion = CASES[0]
    probabilities = torch.tensor(
        [sequential_order_probability(model, prompt, completion, order, MASK)
         for order in itertools.permutations(range(len(completion)))],
        dtype=torch.float64,
    )
    rows = 3000
    for k in (1, 2, 4):
        tuples = torch.tensor(list(itertools.product(range(len(probabilities)), repeat=k)))
        expected = probabilities[tuples].mean(1).log().mean().item()
        sampled = order_bound(
            model, torch.tensor([prompt] * rows), torch.tensor([completion] * rows), num_orders=k,
            generator=torch.Generator().manual_seed(k),
        )
        standard_error = sampled.std().item() / math.sqrt(rows)
        print(f"K={k}: sampled bound {sampled.mean().item():.4f} +- {standard_error:.4f}, exact {expected:.4f}")
        assert abs(sampled.mean().item() - expected) < 3 * standard_error


def test_padding_and_completion_mask_do_not_change_the_estimate(model):
    """A left-padded prompt and a completion cut by its mask score the same as the bare sequence on the same masks."""
    draw = draw_masks(torch.ones(1, 2, dtype=torch.long), 16, generator=torch.Generator().manual_seed(0))
    bare = dipod_trl.elbo(model, torch.tensor([[1, 2]]), torch.tensor([[3, 4]]), draw=draw)
    padded_draw = MaskDraw(
        completion_masks=torch.cat([draw.completion_masks, torch.zeros(1, 16, 2, dtype=torch.bool)], dim=-1),
        weights=draw.weights,
    )
    padded = dipod_trl.elbo(
        model,
        torch.tensor([[0, 0, 1, 2]]),
        torch.tensor([[3, 4, 6, 6]]),
        attention_mask=torch.tensor([[0, 0, 1, 1]]),
        completion_mask=torch.tensor([[1, 1, 0, 0]]),
        draw=padded_draw,
    )
    assert padded.item() == pytest.approx(bare.item(), abs=1e-5)
    orders = torch.tensor([[[1, 0, 2, 3]]])
    assert order_log_likelihoods(
        model, torch.tensor([[0, 0, 1, 2]]), torch.tensor([[3, 4, 6, 6]]), orders,
        attention_mask=torch.tensor([[0, 0, 1, 1]]), completion_mask=torch.tensor([[1, 1, 0, 0]]),
    ).item() == pytest.approx(math.log(sequential_order_probability(model, [1, 2], [3, 4], [1, 0], MASK)), abs=1e-5)


def test_elbo_on_a_shared_draw_is_the_weighted_sum_of_its_masked_token_logps(model):
    """The policies of the FPO ratio are scored on one draw: the estimate is, sample by sample, the draw's weight times
    the masked tokens' log-probabilities, whatever the chunking, with the gradient of that same sum."""
    prompt, completion = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[3, 4, 5], [0, 1, 2]])
    draw = draw_masks(torch.ones_like(completion), 4, generator=torch.Generator().manual_seed(0))
    estimate = dipod_trl.elbo(model, prompt, completion, draw=draw)
    expected = torch.zeros(2)
    for b in range(2):
        for k in range(4):
            masked = draw.completion_masks[b, k].tolist()
            logps = token_logps(model, prompt[b].tolist(), completion[b].tolist(), masked)
            expected[b] += draw.weights[b, k] * sum(lp for lp, m in zip(logps, masked) if m) / 4
    assert torch.allclose(estimate.detach(), expected, atol=1e-5)
    assert torch.allclose(dipod_trl.elbo(model, prompt, completion, draw=draw, chunk_size=3).detach(), expected,
                          atol=1e-5)

    model.zero_grad()
    estimate.sum().backward()
    grad = model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    total = 0.0
    for b in range(2):
        for k in range(4):
            masked = draw.completion_masks[b, k]
            noisy = completion[b].masked_fill(masked, MASK)
            logps = model(torch.cat([prompt[b], noisy])[None]).logits[0, 2:].log_softmax(-1)
            total = total + draw.weights[b, k] * logps.gather(-1, completion[b][:, None])[:, 0][masked].sum() / 4
    total.backward()
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, model.embed_tokens.weight.grad, atol=1e-5)
    model.zero_grad()


def test_one_step_estimate_masks_the_whole_completion(model):
    prompt, completion = [1, 2], [3, 4, 5]
    expected = token_logps(model, prompt, completion, [True, True, True])
    got = one_step_token_logps(model, torch.tensor([prompt]), torch.tensor([completion]))[0]
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_guided_token_logps_are_the_log_softmax_of_llada_cfg_logits(model):
    """With cfg_scale s, a masked token scores log_softmax(uncond + (s + 1) * (cond - uncond)), the prompt masked."""
    prompt, completion = [1, 2], [3, 4, 5]
    draw = draw_masks(torch.ones(1, 3, dtype=torch.long), 4, generator=torch.Generator().manual_seed(0))
    got = masked_token_logps(model, torch.tensor([prompt]), torch.tensor([completion]), draw, cfg_scale=2.0)[0]
    for k in range(4):
        masked = draw.completion_masks[0, k].tolist()
        noisy = [MASK if m else t for t, m in zip(completion, masked)]
        with torch.no_grad():
            cond = model(torch.tensor([prompt + noisy])).logits[0, 2:]
            uncond = model(torch.tensor([[MASK, MASK] + noisy])).logits[0, 2:]
        guided = (uncond + 3.0 * (cond - uncond)).log_softmax(-1)
        expected = [guided[i, completion[i]].item() if masked[i] else 0.0 for i in range(3)]
        assert got[k].tolist() == pytest.approx(expected, abs=1e-5)


def test_prompt_masking_masks_only_real_prompt_tokens():
    attention = torch.tensor([[0, 1, 1, 1]] * 500)
    draw = draw_masks(
        torch.ones(500, 3, dtype=torch.long), 2, generator=torch.Generator().manual_seed(0),
        prompt_attention_mask=attention, p_mask_prompt=0.3,
    )
    assert not draw.prompt_masks[:, :, 0].any()
    assert draw.prompt_masks[:, :, 1:].float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_sft_loss_estimates_the_negative_per_token_elbo_averaged_over_rows(model):
    """LLaDA's SFT normalisation: each row's ELBO over its own length, then the mean over rows (against the exact ELBO
    by enumeration; summed ELBOs over summed lengths would be more than ten standard errors away)."""
    prompt, attention = torch.tensor([[0, 1, 2], [4, 2, 5]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    completion, completion_mask = torch.tensor([[3, 4, 0, 0], [0, 6, 2, 1]]), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    exact = [exact_elbo(model, [1, 2], [3, 4]), exact_elbo(model, [4, 2, 5], [0, 6, 2, 1])]
    samples = 2000
    options = dict(completion_mask=completion_mask, attention_mask=attention, num_samples=samples)
    with torch.no_grad():
        loss = masked_diffusion_sft_loss(model, prompt, completion, generator=torch.Generator().manual_seed(0),
                                         **options)
        per_sample = elbo_samples(model, prompt, completion, generator=torch.Generator().manual_seed(0), **options)
    lengths = torch.tensor([2.0, 4.0])
    standard_error = ((per_sample.std(dim=1) / samples**0.5 / lengths) ** 2).sum().sqrt().item() / 2
    per_row = -(exact[0] / 2 + exact[1] / 4) / 2
    pooled = -(exact[0] + exact[1]) / 6
    assert abs(loss.item() - per_row) < 4 * standard_error
    assert abs(pooled - per_row) > 10 * standard_error


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=3, estimator="antithetic"), "num_samples"),
        (dict(estimator="exact"), "estimator"),
    ],
)
def test_bad_estimator_arguments_name_the_argument(model, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        dipod_trl.elbo(model, torch.tensor([[1]]), torch.tensor([[2, 3]]), **kwargs)


def test_order_bound_rejects_k_below_one(model):
    with pytest.raises(ValueError, match="num_orders"):
        order_bound(model, torch.tensor([[1]]), torch.tensor([[2, 3]]), num_orders=0)


# ---------------------------------------------------------------- the generation canvas: d1's and SPG's masks

PAD = 0  # a canvas position past the first EOS; always shown to the model as the mask token


def canvas_logps(model, prompt, completion, masked, tail):
    """log p(completion_i | ...) when `masked` completion positions and `tail` canvas positions after it are masked."""
    noisy = [MASK if m else t for t, m in zip(completion, masked)] + [MASK] * tail
    with torch.no_grad():
        logits = model(torch.tensor([prompt + noisy])).logits[0, len(prompt): len(prompt) + len(completion)]
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def blocks_of(completion, tail, block_length):
    """The completion positions of each canvas block that holds any (SPG's completion_num_blocks blocks)."""
    canvas = len(completion) + tail
    blocks = [[i for i in range(start, min(start + block_length, canvas)) if i < len(completion)]
              for start in range(0, canvas, block_length)]
    return [b for b in blocks if b]


def exact_block_bound(model, prompt, completion, tail, block_length):
    """sum over blocks k of block k's ELBO given the blocks before it, later blocks and the tail masked: every l and
    every subset of block k enumerated."""
    total = 0.0
    for block in blocks_of(completion, tail, block_length):
        later = [i for i in range(len(completion)) if i > block[-1]]
        size = len(block)
        for l in range(1, size + 1):
            subsets = list(itertools.combinations(block, l))
            for subset in subsets:
                masked = [i in subset or i in later for i in range(len(completion))]
                logps = canvas_logps(model, prompt, completion, masked, tail)
                total += (1 / size) * (size / l) / len(subsets) * sum(logps[i] for i in subset)
    return total


def block_order_log_likelihoods(model, prompt, completion, tail, block_length):
    """log p_sigma(y) for every order that fills the blocks left to right (any order inside a block)."""
    values = []
    for parts in itertools.product(*[itertools.permutations(b) for b in blocks_of(completion, tail, block_length)]):
        masked, total = [True] * len(completion), 0.0
        for position in itertools.chain(*parts):
            total += canvas_logps(model, prompt, completion, masked, tail)[position]
            masked[position] = False
        values.append(total)
    return torch.tensor(values, dtype=torch.float64)


BLOCK_CASES = [([1, 2], [3, 4, 5], 1), ([4], [0, 6, 2, 1], 0), ([2, 5, 1], [6, 6], 2), ([3], [1, 5, 2, 6, 4], 1)]


@pytest.mark.parametrize("prompt,completion,tail", BLOCK_CASES)
def test_block_random_estimator_mean_equals_the_exact_block_bound(model, prompt, completion, tail):
    exact = exact_block_bound(model, prompt, completion, tail, block_length=2)
    samples = elbo_samples(
        model, torch.tensor([prompt]), torch.tensor([completion + [PAD] * tail]),
        completion_mask=torch.tensor([[1] * len(completion) + [0] * tail]), num_samples=20000,
        estimator="block_random", block_length=2, generator=torch.Generator().manual_seed(1),
    )[0]
    mean, standard_error = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    print(f"exact block bound {exact:.4f}  block_random mean {mean:.4f} +- {standard_error:.4f} (K=20000)")
    assert abs(mean - exact) < 3 * standard_error


@pytest.mark.parametrize("prompt,completion,tail", BLOCK_CASES)
def test_block_bound_is_the_mean_over_block_orders_and_below_their_likelihood(model, prompt, completion, tail):
    bound = exact_block_bound(model, prompt, completion, tail, block_length=2)
    values = block_order_log_likelihoods(model, prompt, completion, tail, block_length=2)
    block_likelihood = (torch.logsumexp(values, 0) - math.log(len(values))).item()
    assert values.mean().item() == pytest.approx(bound, abs=1e-5)
    assert bound < block_likelihood  # Jensen; strict: the block orders' likelihoods differ
    if tail == 0:  # without a tail the any-order log-likelihood is the one the tests above enumerate
        orders = torch.tensor([math.log(sequential_order_probability(model, prompt, completion, order, MASK))
                               for order in itertools.permutations(range(len(completion)))], dtype=torch.float64)
        any_order = (torch.logsumexp(orders, 0) - math.log(len(orders))).item()
        print(f"block bound {bound:.4f} <= any-order log-likelihood {any_order:.4f}")
        assert bound <= any_order


def test_block_random_masks_one_block_partly_and_everything_after_it():
    completion_mask = torch.tensor([[1] * 7 + [0] * 3])  # canvas of 10 in blocks of 4: completion blocks 0 and 1
    draw = draw_masks(completion_mask, 500, estimator="block_random", block_length=4,
                      generator=torch.Generator().manual_seed(0))
    scored, context = draw.completion_masks[0], draw.context_masks[0]
    block = torch.arange(10) // 4
    for k in range(500):
        chosen = block[scored[k]].unique()
        assert chosen.numel() == 1 and chosen.item() in (0, 1)  # never the tail-only block 2
        assert torch.equal(context[k], (block > chosen) | (completion_mask[0] == 0))  # later blocks, tail
        tokens = 4 if chosen.item() == 0 else 3
        assert draw.weights[0, k].item() == pytest.approx(2 * tokens / scored[k].sum().item())
    picked_first = (block[scored.float().argmax(-1)] == 0).float().mean().item()
    assert picked_first == pytest.approx(0.5, abs=0.07)


def test_one_step_canvas_masks_the_padding_tail_and_scores_the_real_tokens(model):
    prompt, completion, tail = [1, 2], [3, 4, 5], 3
    canvas = torch.tensor([completion + [PAD] * tail])
    mask = torch.tensor([[1] * 3 + [0] * tail])
    full = one_step_token_logps(model, torch.tensor([prompt]), canvas, completion_mask=mask, mask_padding=True)[0]
    assert full[:3].tolist() == pytest.approx(canvas_logps(model, prompt, completion, [True] * 3, tail), abs=1e-5)
    assert full[3:].tolist() == [0.0] * tail
    valid_only = one_step_token_logps(model, torch.tensor([prompt]), canvas, completion_mask=mask)[0]
    assert valid_only[:3].tolist() == pytest.approx(token_logps(model, prompt, completion, [True] * 3), abs=1e-5)
    assert (full[:3] - valid_only[:3]).abs().max() > 1e-3  # the masked tail is context the model sees

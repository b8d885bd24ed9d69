"""The block-causal likelihood of block-diffusion models (SDAR, LLaDA2) on the tiny block model: the one-pass
`[noisy ‖ clean]` scores against a per-block loop, the estimators against brute-force enumeration of every block's
masks, left padding, memory in the number of samples, and the order bound with block-consistent orders.

The per-block loop is written here independently of the library's one-pass code: for each block, one forward over the
prompt and the completion up to that block's end, the block's masked positions replaced by the mask token, with a
block-causal mask (a query sees its own block and the earlier ones).
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
    masked_token_logps,
    one_step_token_logps,
    order_bound,
    order_log_likelihoods,
)
from dipod_trl.masks import block_orders
from dipod_trl.models import TinyBlockMDLMConfig, TinyBlockMDLMForBlockDiffusion

BLOCK = 3
VOCAB = 8
MASK = VOCAB - 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = TinyBlockMDLMConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64, initializer_range=0.5)
    return TinyBlockMDLMForBlockDiffusion(config).eval()


def loop_token_logps(model, prompt: list[int], completion: list[int], masked: list[bool], block: int = BLOCK):
    """log p(y_i | prompt, clean earlier blocks, own block with `masked` masked) of every completion position, one
    forward per block (blocks counted from the first prompt token)."""
    n = len(prompt)
    slot = [(n + c) // block for c in range(len(completion))]
    out = [0.0] * len(completion)
    for current in sorted(set(slot)):
        cols = [c for c in range(len(completion)) if slot[c] == current]
        ids = prompt + [MASK if masked[c] and c in cols else t for c, t in enumerate(completion[: cols[-1] + 1])]
        blocks = torch.arange(len(ids)) // block
        mask = (blocks[None, :] <= blocks[:, None])[None, None]
        with torch.no_grad():
            logits = model(torch.tensor([ids]), attention_mask=mask, position_ids=torch.arange(len(ids))[None]).logits
        logps = logits[0].double().log_softmax(-1)
        for c in cols:
            out[c] = logps[n + c, completion[c]].item()
    return out


def exact_block_elbo(model, prompt, completion, block=BLOCK):
    """Sum over blocks of each block's ELBO, every mask subset of the block enumerated (l uniform, subsets uniform)."""
    n = len(prompt)
    slot = [(n + c) // block for c in range(len(completion))]
    total = 0.0
    for current in sorted(set(slot)):
        cols = [c for c in range(len(completion)) if slot[c] == current]
        length = len(cols)
        for size in range(1, length + 1):
            subsets = list(itertools.combinations(cols, size))
            for subset in subsets:
                logps = loop_token_logps(model, prompt, completion, [c in subset for c in range(len(completion))],
                                         block)
                total += (1 / length) * (length / size) / len(subsets) * sum(logps[c] for c in subset)
    return total


def padded_batch(prompts, completions, pad=0):
    width = max(map(len, prompts))
    cwidth = max(map(len, completions))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    comp = torch.tensor([c + [pad] * (cwidth - len(c)) for c in completions])
    comp_mask = torch.tensor([[1] * len(c) + [0] * (cwidth - len(c)) for c in completions])
    return ids, attention, comp, comp_mask


# prompts of 3 (whole blocks), 4 and 2 tokens (a partial last block that the completion continues), unequal lengths
PROMPTS = [[1, 2, 3], [4, 5, 6, 2], [3, 1]]
COMPLETIONS = [[2, 6, 0, 5, 3, 1], [6, 6, 0, 1], [0, 5, 4, 3, 2, 1, 6]]


@pytest.mark.parametrize("estimator", ["mc", "antithetic", "stratified", "quadrature", "one_step"])
@pytest.mark.parametrize("extra", [{}, {"p_mask_prompt": 0.3}, {"mask_padding": True}])
def test_one_pass_equals_the_per_block_loop(model, estimator, extra):
    prompt_ids, attention, completion_ids, completion_mask = padded_batch(PROMPTS, COMPLETIONS)
    draw = draw_masks(completion_mask, 4, estimator=estimator, generator=torch.Generator().manual_seed(3),
                      prompt_attention_mask=attention, block_length=BLOCK, block_causal=True, **extra)
    one_pass = masked_token_logps(model, prompt_ids, completion_ids, draw, completion_mask=completion_mask,
                                  attention_mask=attention, block_length=BLOCK)
    worst = 0.0
    for b, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        for k in range(draw.num_samples):
            shown = prompt
            if draw.prompt_masks is not None:  # d1's prompt masking: the prompt is every block's context
                shown = [MASK if m else t for t, m in zip(prompt, draw.prompt_masks[b, k, -len(prompt):])]
            masked = draw.completion_masks[b, k, : len(completion)].tolist()
            # d1's canvas: the positions after the completion are mask tokens, attended inside their block
            canvas = completion_ids.shape[1] - len(completion) if extra.get("mask_padding") else 0
            loop = loop_token_logps(model, shown, completion + [MASK] * canvas, masked + [True] * canvas)
            for c in range(len(completion)):
                expected = loop[c] if masked[c] else 0.0
                worst = max(worst, abs(one_pass[b, k, c].item() - expected))
    print(f"{estimator} {extra}: one pass vs per-block loop, max |difference| {worst:.2e}")
    assert worst < 1e-5
    assert (one_pass[completion_mask.bool().unsqueeze(1).expand_as(one_pass) == 0] == 0).all()


def test_each_block_is_masked_on_its_own_with_its_own_weight():
    attention = torch.tensor([[0, 1, 1, 1, 1]])  # 4 prompt tokens: the first completion token ends a block of 3
    completion_mask = torch.tensor([[1] * 7])
    draw = draw_masks(completion_mask, 200, generator=torch.Generator().manual_seed(0),
                      prompt_attention_mask=attention, block_length=BLOCK, block_causal=True)
    slots = [[0, 1], [2, 3, 4], [5, 6]]  # completion positions of each block (blocks from the first prompt token)
    for cols in slots:
        masked = draw.completion_masks[0][:, cols].sum(-1)
        assert (masked >= 1).all()  # every sample masks l_k >= 1 tokens of every block
        weights = draw.weights[0][:, cols]
        assert torch.equal(weights, (len(cols) / masked.float()).unsqueeze(-1).expand_as(weights))
        assert set(masked.tolist()) == set(range(1, len(cols) + 1))


CASES = [([1, 2, 3], [2, 6, 0, 5, 3, 1]), ([4, 5, 6, 2], [6, 6, 0, 1, 2])]


@pytest.mark.parametrize("prompt,completion", CASES)
@pytest.mark.parametrize("estimator", ["mc", "antithetic", "stratified"])
def test_block_elbo_estimators_match_exact_enumeration(model, prompt, completion, estimator):
    exact = exact_block_elbo(model, prompt, completion)
    rows = 3000
    estimates = dipod_trl.elbo(
        model, torch.tensor([prompt] * rows), torch.tensor([completion] * rows), num_samples=2,
        estimator=estimator, generator=torch.Generator().manual_seed(1), block_length=BLOCK,
    )
    mean, standard_error = estimates.mean().item(), estimates.std().item() / math.sqrt(rows)
    print(f"{estimator}: exact block ELBO {exact:.4f}, estimate {mean:.4f} +- {standard_error:.4f} ({rows} x K=2)")
    assert abs(mean - exact) < 4 * standard_error


def test_one_step_estimate_is_each_block_fully_masked_given_the_clean_blocks_before_it(model):
    prompt, completion = CASES[1]
    one_step = one_step_token_logps(model, torch.tensor([prompt]), torch.tensor([completion]), block_length=BLOCK)[0]
    expected = loop_token_logps(model, prompt, completion, [True] * len(completion))
    assert torch.allclose(one_step.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-5)


def test_left_padding_changes_neither_the_masks_nor_the_elbo(model):
    prompt_ids, attention, completion_ids, completion_mask = padded_batch(PROMPTS, COMPLETIONS)
    widths = dict(completion_width=8, prompt_width=6)

    def row_generators(rows):
        return [torch.Generator().manual_seed(10 + row) for row in rows]

    batch = elbo_samples(model, prompt_ids, completion_ids, completion_mask=completion_mask, attention_mask=attention,
                         num_samples=4, block_length=BLOCK,
                         draw=draw_masks(completion_mask, 4, generator=row_generators(range(3)),
                                         prompt_attention_mask=attention, block_length=BLOCK, block_causal=True,
                                         **widths))
    for row, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        alone_mask = torch.ones(1, len(completion), dtype=torch.long)
        draw = draw_masks(alone_mask, 4, generator=row_generators([row]),
                          prompt_attention_mask=torch.ones(1, len(prompt), dtype=torch.long), block_length=BLOCK,
                          block_causal=True, **widths)
        alone = elbo_samples(model, torch.tensor([prompt]), torch.tensor([completion]), draw=draw, block_length=BLOCK)
        assert torch.allclose(alone[0], batch[row], atol=1e-5), (row, alone[0], batch[row])


def test_scoring_memory_is_flat_in_the_number_of_samples_with_chunking(model):
    """The largest input of any forward (the (2L)^2 attention mask of a chunk) does not grow with the samples."""
    prompt_ids, attention, completion_ids, completion_mask = padded_batch(PROMPTS, COMPLETIONS)
    largest = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: largest.append(kwargs["attention_mask"].numel()), with_kwargs=True)

    def largest_mask(num_samples, chunk_size):
        largest.clear()
        with torch.no_grad():
            elbo_samples(model, prompt_ids, completion_ids, completion_mask=completion_mask, attention_mask=attention,
                         num_samples=num_samples, block_length=BLOCK, chunk_size=chunk_size,
                         generator=torch.Generator().manual_seed(0))
        return max(largest)

    try:
        unchunked = [largest_mask(k, None) for k in (2, 16)]
        chunked = [largest_mask(k, 4) for k in (2, 16)]
    finally:
        hook.remove()
    assert unchunked[1] == 8 * unchunked[0]
    assert chunked[0] == chunked[1]


def test_block_random_and_guidance_are_refused_for_block_causal_models(model):
    prompt, completion = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])
    with pytest.raises(ValueError, match="block_random.*does not apply to a block-causal model"):
        dipod_trl.elbo(model, prompt, completion, estimator="block_random", block_length=BLOCK)
    with pytest.raises(ValueError, match="control_variate.*does not apply to a block-causal model"):
        dipod_trl.elbo(model, prompt, completion, estimator="control_variate", num_samples=2, block_length=BLOCK)
    with pytest.raises(NotImplementedError, match="cfg_scale"):
        dipod_trl.elbo(model, prompt, completion, cfg_scale=1.0, block_length=BLOCK)


# ---------------------------------------------------------------------------------------------------------------------
# Orders and the order bound
# ---------------------------------------------------------------------------------------------------------------------


def test_block_orders_finish_each_block_before_the_next():
    attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # 4 and 6 prompt tokens
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    orders = block_orders(completion_mask, attention, BLOCK, 50, torch.Generator().manual_seed(0))
    for row, offset in enumerate([1, 0]):
        length = int(completion_mask[row].sum())
        blocks = (offset + orders[row, :, :length]) // BLOCK
        assert (blocks[:, 1:] >= blocks[:, :-1]).all()
        assert (orders[row, :, length:] >= length).all()  # padding last
        assert len({tuple(o) for o in orders[row].tolist()}) > 10  # random inside the blocks


def test_orders_that_jump_blocks_are_refused(model):
    with pytest.raises(ValueError, match="reveal the blocks in sequence"):
        order_log_likelihoods(model, torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6, 1]]),
                              torch.tensor([[[3, 0, 1, 2]]]), block_length=BLOCK)


def all_block_orders(prompt_length, length, block=BLOCK):
    slot = [(prompt_length + c) // block for c in range(length)]
    groups = [[c for c in range(length) if slot[c] == s] for s in sorted(set(slot))]
    return [sum(map(list, parts), []) for parts in itertools.product(*(itertools.permutations(g) for g in groups))]


@pytest.mark.parametrize("prompt,completion", CASES)
def test_order_likelihoods_over_all_block_orders_average_to_the_exact_block_elbo(model, prompt, completion):
    orders = all_block_orders(len(prompt), len(completion))
    log_likelihoods = order_log_likelihoods(model, torch.tensor([prompt]), torch.tensor([completion]),
                                            torch.tensor([orders]), block_length=BLOCK)
    assert log_likelihoods.mean().item() == pytest.approx(exact_block_elbo(model, prompt, completion), abs=1e-5)


@pytest.mark.parametrize("prompt,completion", CASES)
def test_order_bound_stays_below_the_exact_block_log_likelihood(model, prompt, completion):
    """The exact log-likelihood of a block-diffusion model: the sum over blocks of the log of the block's likelihood
    averaged over its orders, given the clean blocks before it (= log-mean-exp over all block-consistent orders)."""
    orders = all_block_orders(len(prompt), len(completion))
    every = order_log_likelihoods(model, torch.tensor([prompt]), torch.tensor([completion]), torch.tensor([orders]),
                                  block_length=BLOCK)[0]
    exact = (torch.logsumexp(every, 0) - math.log(len(orders))).item()
    elbo = every.mean().item()
    rows = 400
    bounds = order_bound(model, torch.tensor([prompt] * rows), torch.tensor([completion] * rows), num_orders=4,
                         generator=torch.Generator().manual_seed(0), block_length=BLOCK)
    mean, standard_error = bounds.mean().item(), bounds.std().item() / math.sqrt(rows)
    print(f"exact block log-likelihood {exact:.4f}, order bound (K=4) {mean:.4f} +- {standard_error:.4f}, "
          f"block ELBO {elbo:.4f}")
    assert elbo < mean < exact + 4 * standard_error
    assert (bounds <= every.max() + 1e-5).all()  # a mean of the orders' likelihoods never exceeds the best one


# ---------------------------------------------------------------------------------------------------------------------
# Against the published code: SDAR's / LLaDA2's forward under SDAR's training mask (tests/fixtures/*_tiny)
# ---------------------------------------------------------------------------------------------------------------------

FIXTURES = ["sdar_tiny", "sdar_moe_tiny", "llada2_tiny"]


def fixture(name):
    import os

    from safetensors.torch import load_file

    from dipod_trl.models import load_diffusion_model

    path = os.path.join(os.path.dirname(__file__), "fixtures", name)
    return load_diffusion_model(path).eval(), load_file(os.path.join(path, "parity.safetensors"))


@pytest.mark.parametrize("name", FIXTURES)
def test_the_training_mask_is_the_published_one(name):
    from dipod_trl.models.block_mask import block_diffusion_training_mask, block_ids

    _, recorded = fixture(name)
    published = recorded["bd_attention_mask"]  # SDAR's block_diff_mask over [noisy ‖ clean], 2 x 16 tokens, block 4
    blocks = block_ids(torch.ones(2, 16, dtype=torch.long), 4)
    real = torch.ones(2, 16, dtype=torch.bool)
    assert torch.equal(block_diffusion_training_mask(blocks, blocks, real, real), published)


@pytest.mark.parametrize("name", FIXTURES)
def test_one_pass_scores_equal_the_published_training_forward(name):
    """The published code's logits over [noisy ‖ clean] (recorded with its own modeling file) at the noisy copy's
    completion positions are what `masked_token_logps` scores: the first block is the prompt, the rest the
    completion, masked where the recorded noisy copy is."""
    model, recorded = fixture(name)
    ids, mask_id = recorded["input_ids"], model.config.mask_token_id
    noisy = recorded["bd_input_ids"][:, :16]
    masked = (noisy == mask_id) & (ids != mask_id)
    masked[:, :4] = False  # the prompt: its noisy copy is attended by itself only, and scored by no one
    draw = MaskDraw(masked[:, None, 4:], torch.ones(2, 1))
    with torch.no_grad():
        ours = masked_token_logps(model, ids[:, :4], ids[:, 4:], draw, block_length=4)[:, 0]
    published = recorded["bd_logits"][:, 4:16].log_softmax(-1).gather(-1, ids[:, 4:, None])[..., 0]
    assert masked[:, 4:].sum() >= 6
    difference = (ours - published).abs()[masked[:, 4:]].max().item()
    print(f"{name}: one-pass token log-probabilities vs the published training forward, max |difference| "
          f"{difference:.1e}")
    assert difference < 1e-4

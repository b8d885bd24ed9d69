"""Sequence likelihood estimators for a completion given its prompt, under a masked diffusion LM.

A masked diffusion LM has no tractable log-likelihood. What it does have:

* the **ELBO**, `E_l E_{M:|M|=l} [(L/l) * sum_{i in M} log p(y_i | prompt, y with M masked)]` with `l` uniform on
  `1..L` (`L` the completion length). It equals the log-likelihood along a uniformly random generation order,
  averaged over orders, so it is a lower bound on the log of the order-averaged likelihood;
* the **order likelihood** `log p_sigma(y)`: the exact log-probability of generating `y` one token at a time in the
  order `sigma`, which takes `L` forward passes;
* the **importance-weighted order bound** `log mean_k p_sigma_k(y)` over `K` random orders: equal to the ELBO in
  expectation at `K = 1`, rising with `K` towards `log mean_sigma p_sigma(y)` (the any-order log-likelihood). Its gap
  to the ELBO is how far the surrogate has drifted from the likelihood, the "double drift" DiPOD keeps small.

Randomness is explicit: [`draw_masks`] (in `dipod_trl.masks`) returns a [`MaskDraw`] (which positions each Monte-Carlo
sample masks and its weight) so that the old, current and reference policies can be scored on identical masks, as the
FPO ratio requires.
All samples are scored in batched forward passes (chunked with `chunk_size` to bound memory), never in a Python loop.

Completion positions where `completion_mask` is 0 (after the first EOS) are treated as padding: the model does not
attend to them and they are not scored, so the quantities above are those of the completion up to its first EOS.
Two estimators follow d1 and SPG instead and show them to the model as mask tokens on the fixed generation canvas
(`mask_padding=True` and `block_random`): the model then sees how long the canvas is, as it did while generating.

**Block-diffusion models** (SDAR, LLaDA2: `DiffusionLM.block_causal`) attend causally across blocks of `block_length`
positions (counted from each row's first real prompt token) and bidirectionally inside one. Their ELBO is the sum over
blocks `k` of each block's masked-token ELBO given the clean blocks before it,
`sum_k E_{l_k} E_{M_k:|M_k|=l_k} [(L_k/l_k) sum_{i in M_k} log p(y_i | prompt, y_{<k}, y_k with M_k masked)]`,
and the order likelihoods follow orders that finish a block before the next. All blocks of a sample are scored in ONE
forward over `[noisy ‖ clean]` with the block-diffusion training mask (`models/block_mask.py`): the noisy copy's block
`k` attends its own noisy block and the clean blocks before it, the clean copy attends block-causally to itself, and
both copies carry the same position ids.
"""

from __future__ import annotations

import math

import torch
import torch.utils.checkpoint

from .guidance import model_logits
from .masks import ESTIMATORS, MaskDraw, block_orders, completion_block_slots, draw_masks, random_orders
from .models import as_diffusion_lm
from .models.block_mask import block_diffusion_training_mask
from .models.protocol import padded_positions
from .randomness import Generators


def _prepare(prompt_ids, completion_ids, completion_mask, attention_mask):
    if prompt_ids.dim() != 2 or completion_ids.dim() != 2 or prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids {tuple(prompt_ids.shape)} and completion_ids {tuple(completion_ids.shape)} must be "
            "(batch, length) with the same batch size."
        )
    if completion_mask is None:
        completion_mask = torch.ones_like(completion_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    return completion_mask.long(), attention_mask.long()


def masked_token_logps(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    draw: MaskDraw,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    cfg_scale: float = 0.0,
    chunk_size: int | None = None,
    recompute_chunks: bool = False,
    block_length: int | None = None,
) -> torch.Tensor:
    """log p(y_i | masked sequence) of every completion token that a sample masks; 0 elsewhere. Shape (B, K, C).

    All `B * K` masked sequences go through the model in batched forward passes of at most `chunk_size` rows.
    Differentiable when grad is enabled. With `recompute_chunks`, each chunk runs under activation checkpointing:
    its activations are dropped after the forward pass and recomputed in backward, one chunk at a time, so the
    gradient pass holds one chunk's activations however many rows and samples there are (same gradients).

    A block-causal model scores each block given the clean blocks before it, one `[noisy ‖ clean]` forward per sample
    ([`block_causal_token_logps`]); `block_length` defaults to the model's.
    """
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if lm.block_causal:
        return block_causal_token_logps(
            lm, prompt_ids, completion_ids, draw, completion_mask=completion_mask, attention_mask=attention_mask,
            block_length=block_length, cfg_scale=cfg_scale, chunk_size=chunk_size, recompute_chunks=recompute_chunks,
        )
    batch, num_samples, length = draw.completion_masks.shape
    prompt_length = prompt_ids.shape[1]

    completion = completion_ids.unsqueeze(1).expand(-1, num_samples, -1)
    shown_masked = draw.completion_masks if draw.context_masks is None else draw.completion_masks | draw.context_masks
    noisy_completion = completion.masked_fill(shown_masked, lm.mask_token_id)
    prompt = prompt_ids.unsqueeze(1).expand(-1, num_samples, -1)
    if draw.prompt_masks is not None:
        prompt = prompt.masked_fill(draw.prompt_masks, lm.mask_token_id)
    noisy = torch.cat([prompt, noisy_completion], dim=-1).reshape(batch * num_samples, -1)
    attention = torch.cat([attention_mask, completion_mask], dim=-1)
    attention = attention.unsqueeze(1).expand(-1, num_samples, -1).reshape(batch * num_samples, -1)
    if draw.context_masks is not None:  # masked canvas positions past the first EOS are attended, as in d1 and SPG
        shown = torch.cat([torch.zeros_like(prompt), draw.context_masks.long()], dim=-1)
        attention = attention | shown.reshape(batch * num_samples, -1)
    prompt_index = torch.zeros_like(noisy, dtype=torch.bool)
    prompt_index[:, :prompt_length] = attention[:, :prompt_length].bool()
    targets = completion.reshape(batch * num_samples, length)
    scored = draw.completion_masks.reshape(batch * num_samples, length)

    def chunk_logps(noisy, attention, prompt_index, targets, scored):
        logits = model_logits(lm, noisy, attention, prompt_index, cfg_scale)[:, prompt_length:]
        return _target_logps(logits, targets, scored)

    rows = (noisy, attention, prompt_index, targets, scored)
    return _in_chunks(chunk_logps, rows, chunk_size, recompute_chunks).view(batch, num_samples, length)


def _target_logps(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """log-softmax at the target only: logit[target] - logsumexp(logits), in float32 at least; 0 where not scored."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (target_logits - torch.logsumexp(logits, dim=-1)).masked_fill(~scored, 0.0)


def _in_chunks(function, rows: tuple, chunk_size: int | None, recompute_chunks: bool) -> torch.Tensor:
    """`function(*rows)` over chunks of at most `chunk_size` rows, concatenated; under activation checkpointing per
    chunk with `recompute_chunks` (when grad is enabled)."""
    checkpointed = recompute_chunks and torch.is_grad_enabled()
    chunk_size = chunk_size or rows[0].shape[0]
    pieces = []
    for start in range(0, rows[0].shape[0], chunk_size):
        chunk = tuple(tensor[start : start + chunk_size] for tensor in rows)
        if checkpointed:
            pieces.append(torch.utils.checkpoint.checkpoint(function, *chunk, use_reentrant=False))
        else:
            pieces.append(function(*chunk))
    return torch.cat(pieces)


def block_causal_token_logps(
    lm,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    draw: MaskDraw,
    *,
    completion_mask: torch.Tensor,
    attention_mask: torch.Tensor,
    block_length: int | None = None,
    cfg_scale: float = 0.0,
    chunk_size: int | None = None,
    recompute_chunks: bool = False,
) -> torch.Tensor:
    """[`masked_token_logps`] of a block-diffusion model: each block given the clean blocks before it. (B, K, C).

    One forward per sample over `[noisy ‖ clean]`: the noisy copy holds the sample's masks (and d1's canvas masks,
    attended inside their block), the clean copy the completion as it is; the mask is SDAR's training mask
    ([`block_diffusion_training_mask`]) and both copies carry the same position ids. The noisy copy starts at the
    first block that holds a completion token (the earlier blocks' noisy queries would score nothing). Prompt tokens
    that `draw.prompt_masks` masks (d1's `p_mask_prompt`) are masked in both copies: the prompt is the context of
    every block.
    """
    block_length = block_length or lm.default_block_length
    if block_length is None:
        raise ValueError("block_length: this block-causal model declares no default block length; pass one.")
    if cfg_scale > 0:
        raise NotImplementedError(
            "cfg_scale > 0 with a block-causal model: classifier-free guidance is not part of the SDAR / LLaDA2 "
            "samplers or training, so it is not defined here. Set cfg_scale=0."
        )
    if lm.shift_logits:
        raise NotImplementedError("A block-causal model with shifted logits is not supported (no such family).")
    batch, num_samples, length = draw.completion_masks.shape
    prompt_length = prompt_ids.shape[1]
    completion = completion_ids.unsqueeze(1).expand(-1, num_samples, -1)
    prompt = prompt_ids.unsqueeze(1).expand(-1, num_samples, -1)
    if draw.prompt_masks is not None:
        prompt = prompt.masked_fill(draw.prompt_masks, lm.mask_token_id)
    shown_masked = draw.completion_masks if draw.context_masks is None else draw.completion_masks | draw.context_masks
    clean = torch.cat([prompt, completion], dim=-1)
    noisy = torch.cat([prompt, completion.masked_fill(shown_masked, lm.mask_token_id)], dim=-1)
    clean_keys = torch.cat([attention_mask, completion_mask], dim=-1).bool().unsqueeze(1)
    noisy_keys = clean_keys.expand(-1, num_samples, -1)
    if draw.context_masks is not None:  # canvas mask tokens past the first EOS are attended inside their block
        no_prompt = torch.zeros_like(prompt, dtype=torch.bool)
        noisy_keys = noisy_keys | torch.cat([no_prompt, draw.context_masks], dim=-1)
    # completion positions count on after the prompt's real tokens, masked canvas positions included
    positions = padded_positions(torch.cat([attention_mask, torch.ones_like(completion_ids)], dim=-1)).unsqueeze(1)
    blocks = positions // block_length
    start = prompt_length - int((attention_mask.sum(-1) % block_length).max())  # first block with completion tokens

    def flat(tensor):
        return tensor.expand(batch, num_samples, -1).reshape(batch * num_samples, -1)

    def chunk_logps(noisy, clean, positions, blocks, noisy_keys, clean_keys, targets, scored):
        ids = torch.cat([noisy[:, start:], clean], dim=1)
        mask = block_diffusion_training_mask(blocks[:, start:], blocks, noisy_keys[:, start:], clean_keys)
        position_ids = torch.cat([positions[:, start:], positions], dim=1)
        logits = lm.model(ids, attention_mask=mask, position_ids=position_ids).logits
        return _target_logps(logits[:, prompt_length - start : clean.shape[1] - start], targets, scored)

    rows = (flat(noisy), flat(clean), flat(positions), flat(blocks), flat(noisy_keys), flat(clean_keys),
            flat(completion), flat(draw.completion_masks))
    return _in_chunks(chunk_logps, rows, chunk_size, recompute_chunks).view(batch, num_samples, length)


def elbo_from_token_logps(token_logps: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
    """Per-sample estimates (B, K): each sample's masked-token log-probability sum times its weight (or each token's
    log-probability times its own weight, for weights of shape (B, K, C): block-causal draws and token-weighted
    estimators)"""
    if draw.weights.dim() == 3:
        return (draw.weights * token_logps).sum(-1)
    return draw.weights * token_logps.sum(-1)


def elbo_samples(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_samples: int = 1,
    estimator: str = "mc",
    generator: Generators = None,
    p_mask_prompt: float = 0.0,
    draw: MaskDraw | None = None,
    cfg_scale: float = 0.0,
    chunk_size: int | None = None,
    block_length: int | None = None,
) -> torch.Tensor:
    """The `K` per-sample ELBO estimates of each row, shape (B, K); [`elbo`] is their mean."""
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if lm.block_causal:
        block_length = block_length or lm.default_block_length
    if draw is None:
        draw = draw_masks(
            completion_mask,
            num_samples,
            estimator=estimator,
            generator=generator,
            prompt_attention_mask=attention_mask,
            p_mask_prompt=p_mask_prompt,
            block_length=block_length,
            block_causal=lm.block_causal,
        )
    token_logps = masked_token_logps(
        lm,
        prompt_ids,
        completion_ids,
        draw,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        cfg_scale=cfg_scale,
        chunk_size=chunk_size,
        block_length=block_length,
    )
    return elbo_from_token_logps(token_logps, draw)


def elbo(model, prompt_ids: torch.Tensor, completion_ids: torch.Tensor, **options) -> torch.Tensor:
    """Monte-Carlo ELBO of each completion given its prompt: one value per row, in nats, summed over tokens.

    The mean of [`elbo_samples`] over its `K` samples; `options` are that function's. The main ones:

    Args:
        model: a Hugging Face diffusion LM or a [`DiffusionLM`].
        prompt_ids: (B, P), left-padded; `attention_mask` (B, P) marks the real tokens.
        completion_ids: (B, C); `completion_mask` (B, C) is 1 up to the first EOS (defaults to all ones).
        num_samples: `K`, Monte-Carlo samples per row (all scored in one batched pass, chunked by `chunk_size`).
        estimator: `mc` | `antithetic` | `stratified` | `block_random` (needs `block_length`; its bound is the
            block-by-block ELBO, on the canvas `completion_ids` spans) | `one_step` (see [`draw_masks`]). For a
            block-causal model each block is masked on its own, and `block_random` is refused (it is already the
            model's own block-by-block factorisation).
        block_length: `block_random`'s block length; for a block-causal model its attention blocks (default: the
            model's `default_block_length`).
        generator: seeds the mask draw; pass `draw=` instead to reuse masks across policies.
        p_mask_prompt: also mask prompt tokens with this probability (d1's biased, regularising variant).
    """
    return elbo_samples(model, prompt_ids, completion_ids, **options).mean(dim=1)


def one_step_token_logps(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    p_mask_prompt: float = 0.0,
    generator: Generators = None,
    draw: MaskDraw | None = None,
    cfg_scale: float = 0.0,
    mask_padding: bool = False,
    block_length: int | None = None,
) -> torch.Tensor:
    """d1's one-step per-token estimate (diffu-GRPO): completion fully masked, prompt randomly masked. Shape (B, C).

    `mask_padding=True` masks the whole canvas `completion_ids` spans, the positions after the first EOS included, as
    d1 does; the real tokens are scored either way. For a block-causal model it is the one-step estimate of each
    block given the clean blocks before it (every block fully masked, in one `[noisy ‖ clean]` pass).
    """
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if draw is None:
        draw = draw_masks(
            completion_mask,
            1,
            estimator="one_step",
            generator=generator,
            prompt_attention_mask=attention_mask,
            p_mask_prompt=p_mask_prompt,
            mask_padding=mask_padding,
        )
    return masked_token_logps(
        lm,
        prompt_ids,
        completion_ids,
        draw,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        cfg_scale=cfg_scale,
        block_length=block_length,
    )[:, 0]


def order_log_likelihoods(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    orders: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    block_length: int | None = None,
) -> torch.Tensor:
    """Exact `log p_sigma(y)` along given generation orders: unmask one token per step, in order. Shape (B, K).

    `orders` is (B, K, C): `orders[b, k, s]` is the completion position revealed at step `s`; a row's valid positions
    (where `completion_mask` is 1) must come first, in any order. Costs `K * L` sequences per row, batched. A
    block-causal model follows only orders that finish a block before the next ([`block_orders`]); `block_length`
    defaults to the model's.
    """
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if lm.block_causal:
        block_length = block_length or lm.default_block_length
        _check_block_orders(orders, completion_mask, attention_mask, block_length)
    batch, num_orders, length = orders.shape
    # rank[i] = the step at which position i is revealed
    ranks = orders.argsort(dim=-1)
    steps = torch.arange(length, device=orders.device)
    valid = completion_mask.bool()[:, None, None, :]
    # Step s: positions revealed at step s or later are masked; the one revealed at step s is scored.
    masked = (ranks[:, :, None, :] >= steps[None, None, :, None]) & valid  # (B, K, S, C)
    scored = (ranks[:, :, None, :] == steps[None, None, :, None]) & valid
    steps_used = completion_mask.sum(-1).max().item()  # later steps score nothing in any row
    masked, scored = masked[:, :, :steps_used], scored[:, :, :steps_used]
    flat_draw = MaskDraw(
        completion_masks=masked.reshape(batch, num_orders * steps_used, length),
        weights=torch.ones(batch, num_orders * steps_used, device=orders.device),
    )
    token_logps = masked_token_logps(
        lm,
        prompt_ids,
        completion_ids,
        flat_draw,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        chunk_size=chunk_size,
        block_length=block_length,
    ).view(batch, num_orders, steps_used, length)
    return (token_logps * scored).sum(dim=(-1, -2))


def _check_block_orders(orders, completion_mask, attention_mask, block_length) -> None:
    """Refuse orders a block-causal model cannot follow: its block `k` is scored given blocks `< k` clean."""
    if block_length is None:
        raise ValueError("block_length: this block-causal model declares no default block length; pass one.")
    slots = completion_block_slots(attention_mask, orders.shape[-1], block_length)
    slots = slots.expand(orders.shape[0], -1).unsqueeze(1).expand_as(orders)
    revealed = slots.gather(-1, orders).masked_fill(~completion_mask.bool().sort(-1, descending=True).values[:, None],
                                                    torch.iinfo(torch.long).max)
    if bool((revealed[..., 1:] < revealed[..., :-1]).any()):
        raise ValueError(
            "orders: a block-causal model scores each block given the clean blocks before it, so an order must reveal "
            "the blocks in sequence (a random order inside each block). Draw them with masks.block_orders."
        )


def order_bound(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_orders: int = 4,
    generator: Generators = None,
    chunk_size: int | None = None,
    block_length: int | None = None,
) -> torch.Tensor:
    """Importance-weighted bound `log mean_k p_sigma_k(y)` over `num_orders` random orders: one value per row.

    A lower bound on the any-order log-likelihood `log mean_sigma p_sigma(y)` that tightens as `num_orders` grows; at
    `num_orders = 1` it equals the ELBO in expectation. A block-causal model draws its orders block by block
    ([`block_orders`]); its any-order log-likelihood is then the sum over blocks of each block's, given the clean
    blocks before it.
    """
    if num_orders < 1:
        raise ValueError(f"num_orders (K) must be >= 1, got {num_orders}.")
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if lm.block_causal:
        block_length = block_length or lm.default_block_length
        orders = block_orders(completion_mask, attention_mask, block_length, num_orders, generator)
    else:
        orders = random_orders(completion_mask, num_orders, generator)
    log_likelihoods = order_log_likelihoods(
        lm,
        prompt_ids,
        completion_ids,
        orders,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        chunk_size=chunk_size,
        block_length=block_length,
    )
    return log_mean_exp(log_likelihoods)


def log_mean_exp(log_likelihoods: torch.Tensor) -> torch.Tensor:
    """`log mean_k exp(x_k)` over the last dimension: the order bound from K orders' log-likelihoods (B, K)."""
    return torch.logsumexp(log_likelihoods, dim=-1) - math.log(log_likelihoods.shape[-1])


def masked_diffusion_sft_loss(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_samples: int = 1,
    estimator: str = "mc",
    generator: Generators = None,
) -> torch.Tensor:
    """Masked-diffusion SFT loss: the negative ELBO of each completion per completion token, averaged over rows.

    The per-row normalisation by completion length follows LLaDA's SFT recipe; the `mc` estimator (`l` uniform) has
    lower variance than weighting by `1/t` with a continuous mask ratio, and `antithetic` or `stratified` lower still.
    """
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    estimates = elbo(
        model,
        prompt_ids,
        completion_ids,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        num_samples=num_samples,
        estimator=estimator,
        generator=generator,
    )
    return -(estimates / completion_mask.sum(-1).clamp(min=1)).mean()


__all__ = [
    "ESTIMATORS",
    "MaskDraw",
    "block_causal_token_logps",
    "block_orders",
    "draw_masks",
    "elbo",
    "elbo_from_token_logps",
    "elbo_samples",
    "masked_diffusion_sft_loss",
    "masked_token_logps",
    "one_step_token_logps",
    "order_bound",
    "order_log_likelihoods",
    "random_orders",
]


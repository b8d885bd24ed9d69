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

Randomness is explicit: [`draw_masks`] returns a [`MaskDraw`] (which positions each Monte-Carlo sample masks and its
weight) so that the old, current and reference policies can be scored on identical masks, as the FPO ratio requires.
All samples are scored in batched forward passes (chunked with `chunk_size` to bound memory), never in a Python loop.

Completion positions where `completion_mask` is 0 (after the first EOS) are treated as padding: the model does not
attend to them and they are not scored, so the quantities above are those of the completion up to its first EOS.
Two estimators follow d1 and SPG instead and show them to the model as mask tokens on the fixed generation canvas
(`mask_padding=True` and `block_random`): the model then sees how long the canvas is, as it did while generating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from .models.adapters import as_diffusion_lm
from .sampling import Generators, model_logits, random_uniform

ESTIMATORS = ("mc", "antithetic", "stratified", "block_random", "one_step")


@dataclass
class MaskDraw:
    """The masks of `K` Monte-Carlo samples for a batch of `B` completions of (padded) length `C`.

    Attributes:
        completion_masks: bool (B, K, C), True where the sample masks a completion token.
        weights: float (B, K), the factor applied to a sample's sum of masked-token log-probabilities (`L / l` for the
            ELBO, 1 for the one-step estimate); 0 for an empty completion.
        prompt_masks: bool (B, K, P) or None, prompt positions masked as well (d1's `p_mask_prompt`).
        context_masks: bool (B, K, C) or None, completion positions shown as mask tokens but not scored: the later
            blocks of `block_random`, and canvas positions past the first EOS (which are then attended).
    """

    completion_masks: torch.Tensor
    weights: torch.Tensor
    prompt_masks: torch.Tensor | None = None
    context_masks: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return self.completion_masks.shape[1]

    def to(self, device) -> MaskDraw:
        optional = [None if m is None else m.to(device) for m in (self.prompt_masks, self.context_masks)]
        return MaskDraw(self.completion_masks.to(device), self.weights.to(device), *optional)

    def __getitem__(self, index) -> MaskDraw:
        """Select rows (the batch dimension), e.g. to split a generation batch into micro-batches."""
        optional = [None if m is None else m[index] for m in (self.prompt_masks, self.context_masks)]
        return MaskDraw(self.completion_masks[index], self.weights[index], *optional)


def _uniform(shape, generator: Generators, device, width: int | None = None, align: str = "left") -> torch.Tensor:
    """Uniform numbers whose last dimension is cut from a draw of at least `width` numbers.

    Drawing a fixed width keeps a row's numbers independent of how wide the batch is padded (with per-row
    generators, a row then gets the same masks in any batch): completions are right-padded, so their numbers are
    taken from the left; prompts are left-padded and take theirs from the right.
    """
    length = shape[-1]
    full = random_uniform((*shape[:-1], max(length, width or 0)), generator, device)
    return full[..., :length] if align == "left" else full[..., full.shape[-1] - length:]


def _random_ranks(valid: torch.Tensor, generator: Generators, width: int | None = None) -> torch.Tensor:
    """A uniformly random order of each row's valid positions: rank 0..n-1 on valid positions, >= n elsewhere."""
    keys = _uniform(valid.shape, generator, valid.device, width).masked_fill(~valid, 2.0)
    return keys.argsort(dim=-1).argsort(dim=-1)


def draw_masks(
    completion_mask: torch.Tensor,
    num_samples: int,
    *,
    estimator: str = "mc",
    generator: Generators = None,
    prompt_attention_mask: torch.Tensor | None = None,
    p_mask_prompt: float = 0.0,
    completion_width: int | None = None,
    prompt_width: int | None = None,
    block_length: int | None = None,
    mask_padding: bool = False,
) -> MaskDraw:
    """Draw the masks of `num_samples` Monte-Carlo samples per row.

    Estimators (all unbiased for the ELBO except `one_step`):

    * `mc`: `l` uniform on `1..L`, then a uniformly random subset of `l` completion tokens, weight `L / l`.
    * `antithetic`: samples come in pairs that share one random order `pi`: `pi[:l]` and `pi[l-1:]` (sizes `l` and
      `L - l + 1`, both uniform on `1..L`). The pair covers every token, overlapping in one, so a sample that masks
      little (high variance) is paired with one that masks much. `num_samples` must be even.
    * `stratified`: sample `k` of `K` draws its mask ratio from the `k`-th of `K` equal strata of (0, 1]
      (LLaDA-1.5's VRPO); the average over the `K` samples stays unbiased.
    * `block_random`: SPG's block-wise estimate of the semi-autoregressive ELBO (SPG's `forward_type
      block_random`). Each sample picks one block `k` of `block_length` positions uniformly among the blocks that
      hold completion tokens, masks `l` uniform on `1..L_k` of its `L_k` completion tokens, shows every later block
      and every position past the first EOS as mask tokens (not scored), and weighs the masked tokens by
      `K_c * L_k / l` (`K_c` blocks). Its mean is `sum_k ELBO_k`, the ELBO of generating block after block (each
      block's ELBO given the blocks before it, later ones masked): the mean log-likelihood over generation orders
      that finish a block before starting the next. (SPG's own code also scores the later blocks' tokens and
      averages over every scored token, which estimates no bound; the paper's recipes use this estimator.)
    * `one_step`: d1's diffu-GRPO estimate: the whole completion masked, weight 1 (one sample per row is enough;
      it is deterministic apart from prompt masking).

    `mask_padding=True` also shows the positions after each completion (up to the width of `completion_mask`, the
    generation canvas) as mask tokens, unscored: d1's one-step estimate masks its whole canvas this way.
    `block_random` always does.

    `p_mask_prompt > 0` also masks each real prompt token with that probability (as d1 does). The result is then a
    biased, regularised variant of the estimate rather than a bound on the likelihood.

    `generator` may be one generator per row; with `completion_width` / `prompt_width` (the longest completion and
    prompt the run allows) a row's masks then do not depend on how the batch is padded.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (K) must be >= 1, got {num_samples}.")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "antithetic" and num_samples % 2 != 0:
        raise ValueError(f"num_samples must be even for estimator='antithetic' (pairs of masks), got {num_samples}.")
    if not 0.0 <= p_mask_prompt < 1.0:
        raise ValueError(f"p_mask_prompt must be in [0, 1), got {p_mask_prompt}.")
    if estimator == "block_random" and (block_length is None or block_length < 1):
        raise ValueError(f"estimator='block_random' needs a positive block_length, got {block_length}.")

    valid = completion_mask.bool().unsqueeze(1).expand(-1, num_samples, -1)  # (B, K, C)
    batch, _, length = valid.shape
    device = completion_mask.device
    lengths = completion_mask.long().sum(-1, keepdim=True).expand(-1, num_samples)  # (B, K)

    context = ~valid if mask_padding else None
    if estimator == "one_step":
        masks = valid.clone()
        weights = (lengths > 0).float()
    elif estimator == "block_random":
        masks, weights, context = _block_random(valid, block_length, generator, completion_width)
    else:
        ranks = _random_ranks(valid, generator, completion_width)
        if estimator == "mc":
            u = random_uniform((batch, num_samples), generator, device)
        elif estimator == "stratified":
            strata = torch.arange(num_samples, device=device).unsqueeze(0)
            u = (strata + random_uniform((batch, num_samples), generator, device)) / num_samples
        else:  # antithetic: one draw per pair; the partner reuses the order of its first sample
            u = random_uniform((batch, num_samples // 2), generator, device)
            ranks = ranks[:, 0::2].repeat_interleave(2, dim=1)
        # l = ceil(u * L) is uniform on 1..L for u uniform on (0, 1]; clamp guards u == 0 exactly.
        num_masked = torch.ceil(u * lengths[:, : u.shape[1]]).long().clamp(min=1)
        if estimator == "antithetic":
            first = ranks[:, 0::2] < num_masked.unsqueeze(-1)
            second = (ranks[:, 1::2] >= (num_masked - 1).unsqueeze(-1)) & valid[:, 1::2]
            masks = torch.stack([first, second], dim=2).view(batch, num_samples, length)
            num_masked = torch.stack([num_masked, lengths[:, 0::2] - num_masked + 1], dim=2).view(batch, num_samples)
        else:
            masks = ranks < num_masked.unsqueeze(-1)
        masks = masks & valid
        weights = torch.where(lengths > 0, lengths.float() / num_masked.clamp(min=1).float(), 0.0)

    prompt_masks = None
    if p_mask_prompt > 0:
        if prompt_attention_mask is None:
            raise ValueError("p_mask_prompt > 0 needs prompt_attention_mask (which prompt positions are real tokens).")
        prompt_valid = prompt_attention_mask.bool().unsqueeze(1).expand(-1, num_samples, -1)
        draws = _uniform(prompt_valid.shape, generator, device, prompt_width, align="right")
        prompt_masks = (draws < p_mask_prompt) & prompt_valid
    return MaskDraw(masks, weights.to(device), prompt_masks, context)


def _block_random(valid: torch.Tensor, block_length: int, generator: Generators, width: int | None):
    """`block_random`'s scored masks, weights and context masks (see [`draw_masks`]) for valid positions (B, K, C)."""
    batch, num_samples, length = valid.shape
    device = valid.device
    block_of = torch.arange(length, device=device) // block_length  # (C,)
    num_blocks = int(block_of[-1].item()) + 1 if length else 0
    per_block = torch.zeros(batch, num_samples, num_blocks, device=device, dtype=torch.long)
    per_block.index_add_(2, block_of, valid.long())  # completion tokens per block
    nonempty = per_block > 0
    num_nonempty = nonempty.sum(-1)  # K_c
    # block k: the r-th non-empty block, r uniform on 0..K_c-1
    u_block, u_count = random_uniform((batch, num_samples, 2), generator, device).unbind(-1)
    r = torch.minimum((u_block * num_nonempty).long(), (num_nonempty - 1).clamp(min=0))
    chosen = (nonempty & (nonempty.long().cumsum(-1) == (r + 1).unsqueeze(-1))).float().argmax(-1)  # (B, K)
    in_block = block_of.view(1, 1, -1) == chosen.unsqueeze(-1)
    block_tokens = per_block.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # L_k
    num_masked = torch.ceil(u_count * block_tokens).long().clamp(min=1)  # uniform on 1..L_k
    ranks = _random_ranks(valid & in_block, generator, width)
    masks = (ranks < num_masked.unsqueeze(-1)) & valid & in_block
    context = (block_of.view(1, 1, -1) > chosen.unsqueeze(-1)) | ~valid
    weights = torch.where(num_nonempty > 0, num_nonempty * block_tokens / num_masked.float(), 0.0)
    return masks, weights.float(), context & ~masks


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
) -> torch.Tensor:
    """log p(y_i | masked sequence) of every completion token that a sample masks; 0 elsewhere. Shape (B, K, C).

    All `B * K` masked sequences go through the model in batched forward passes of at most `chunk_size` rows.
    Differentiable when grad is enabled. With `recompute_chunks`, each chunk runs under activation checkpointing:
    its activations are dropped after the forward pass and recomputed in backward, one chunk at a time, so the
    gradient pass holds one chunk's activations however many rows and samples there are (same gradients).
    """
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
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
        # log-softmax at the target only: logit[target] - logsumexp(logits), in float32 at least.
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (target_logits - torch.logsumexp(logits, dim=-1)).masked_fill(~scored, 0.0)

    checkpointed = recompute_chunks and torch.is_grad_enabled()
    chunk_size = chunk_size or noisy.shape[0]
    pieces = []
    for start in range(0, noisy.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        chunk = (noisy[rows], attention[rows], prompt_index[rows], targets[rows], scored[rows])
        if checkpointed:
            pieces.append(torch.utils.checkpoint.checkpoint(chunk_logps, *chunk, use_reentrant=False))
        else:
            pieces.append(chunk_logps(*chunk))
    return torch.cat(pieces).view(batch, num_samples, length)


def elbo_from_token_logps(token_logps: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
    """Per-sample estimates (B, K): each sample's masked-token log-probability sum times its weight."""
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
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    if draw is None:
        draw = draw_masks(
            completion_mask,
            num_samples,
            estimator=estimator,
            generator=generator,
            prompt_attention_mask=attention_mask,
            p_mask_prompt=p_mask_prompt,
            block_length=block_length,
        )
    token_logps = masked_token_logps(
        model,
        prompt_ids,
        completion_ids,
        draw,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        cfg_scale=cfg_scale,
        chunk_size=chunk_size,
    )
    return elbo_from_token_logps(token_logps, draw)


def elbo(
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
    """Monte-Carlo ELBO of each completion given its prompt: one value per row, in nats, summed over tokens.

    Args:
        model: a Hugging Face diffusion LM or a [`DiffusionLM`].
        prompt_ids: (B, P), left-padded; `attention_mask` (B, P) marks the real tokens.
        completion_ids: (B, C); `completion_mask` (B, C) is 1 up to the first EOS (defaults to all ones).
        num_samples: `K`, Monte-Carlo samples per row (all scored in one batched pass, chunked by `chunk_size`).
        estimator: `mc` | `antithetic` | `stratified` | `block_random` (needs `block_length`; its bound is the
            block-by-block ELBO, on the canvas `completion_ids` spans) | `one_step` (see [`draw_masks`]).
        generator: seeds the mask draw; pass `draw=` instead to reuse masks across policies.
        p_mask_prompt: also mask prompt tokens with this probability (d1's biased, regularising variant).
    """
    return elbo_samples(
        model,
        prompt_ids,
        completion_ids,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        num_samples=num_samples,
        estimator=estimator,
        generator=generator,
        p_mask_prompt=p_mask_prompt,
        draw=draw,
        cfg_scale=cfg_scale,
        chunk_size=chunk_size,
        block_length=block_length,
    ).mean(dim=1)


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
) -> torch.Tensor:
    """d1's one-step per-token estimate (diffu-GRPO): completion fully masked, prompt randomly masked. Shape (B, C).

    `mask_padding=True` masks the whole canvas `completion_ids` spans, the positions after the first EOS included, as
    d1 does; the real tokens are scored either way.
    """
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
        model,
        prompt_ids,
        completion_ids,
        draw,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        cfg_scale=cfg_scale,
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
) -> torch.Tensor:
    """Exact `log p_sigma(y)` along given generation orders: unmask one token per step, in order. Shape (B, K).

    `orders` is (B, K, C): `orders[b, k, s]` is the completion position revealed at step `s`; a row's valid positions
    (where `completion_mask` is 1) must come first, in any order. Costs `K * L` sequences per row, batched.
    """
    lm = as_diffusion_lm(model)
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
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
    ).view(batch, num_orders, steps_used, length)
    return (token_logps * scored).sum(dim=(-1, -2))


def random_orders(completion_mask: torch.Tensor, num_orders: int, generator: Generators = None) -> torch.Tensor:
    """`num_orders` uniformly random generation orders per row, valid positions first. Shape (B, K, C)."""
    valid = completion_mask.bool().unsqueeze(1).expand(-1, num_orders, -1)
    return _random_ranks(valid, generator).argsort(dim=-1)


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
) -> torch.Tensor:
    """Importance-weighted bound `log mean_k p_sigma_k(y)` over `num_orders` random orders: one value per row.

    A lower bound on the any-order log-likelihood `log mean_sigma p_sigma(y)` that tightens as `num_orders` grows; at
    `num_orders = 1` it equals the ELBO in expectation.
    """
    if num_orders < 1:
        raise ValueError(f"num_orders (K) must be >= 1, got {num_orders}.")
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    orders = random_orders(completion_mask, num_orders, generator)
    log_likelihoods = order_log_likelihoods(
        model,
        prompt_ids,
        completion_ids,
        orders,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        chunk_size=chunk_size,
    )
    return torch.logsumexp(log_likelihoods, dim=-1) - math.log(num_orders)


def masked_diffusion_sft_loss(
    model,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    completion_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_samples: int = 1,
    generator: Generators = None,
) -> torch.Tensor:
    """Masked-diffusion SFT loss: the negative ELBO of each completion per completion token, averaged over rows.

    The per-row normalisation by completion length follows LLaDA's SFT recipe; the `mc` estimator (`l` uniform) has
    lower variance than weighting by `1/t` with a continuous mask ratio.
    """
    completion_mask, attention_mask = _prepare(prompt_ids, completion_ids, completion_mask, attention_mask)
    estimates = elbo(
        model,
        prompt_ids,
        completion_ids,
        completion_mask=completion_mask,
        attention_mask=attention_mask,
        num_samples=num_samples,
        generator=generator,
    )
    return -(estimates / completion_mask.sum(-1).clamp(min=1)).mean()


__all__ = [
    "ESTIMATORS",
    "MaskDraw",
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


"""Random masks of completion tokens for Monte-Carlo likelihood estimates, and random generation orders.

A [`MaskDraw`] says which positions each Monte-Carlo sample masks and its weight, so that the old, current and
reference policies can be scored on identical masks, as the FPO ratio requires. With one generator per row (and the
run's widest prompt and completion), a row's masks do not depend on how the batch is padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .randomness import Generators, random_uniform

ESTIMATORS = ("mc", "antithetic", "stratified", "quadrature", "control_variate", "block_random", "one_step")
# Estimators whose weights are per token, (B, K, C), instead of per sample.
TOKEN_WEIGHTED_ESTIMATORS = ("control_variate",)
# Estimators whose samples come in pairs that share one random order.
PAIRED_ESTIMATORS = ("antithetic", "quadrature")


def check_num_samples(num_samples: int, estimator: str, *, names=("num_samples", "estimator")) -> None:
    """Refuse a sample count the estimator cannot use; `names` are the caller's names of the two arguments."""
    count, kind = names
    if num_samples < 1:
        raise ValueError(f"{count} (K) must be >= 1, got {num_samples}.")
    if estimator in PAIRED_ESTIMATORS and num_samples % 2 != 0:
        raise ValueError(f"{count} must be even for {kind}={estimator!r} (pairs of masks), got {num_samples}.")
    if estimator == "control_variate" and num_samples < 2:
        raise ValueError(f"{count} must be >= 2 for {kind}='control_variate' (the fully masked sample and at least "
                         f"one random mask), got {num_samples}.")


@dataclass
class MaskDraw:
    """The masks of `K` Monte-Carlo samples for a batch of `B` completions of (padded) length `C`.

    Attributes:
        completion_masks: bool (B, K, C), True where the sample masks a completion token.
        weights: float (B, K), the factor applied to a sample's sum of masked-token log-probabilities (`L / l` for the
            ELBO, 1 for the one-step estimate); 0 for an empty completion. Or float (B, K, C), one factor per token:
            the block-causal draws, where each block has its own `L_k / l_k`, and the estimators that weigh each token
            of a sample separately (`control_variate`, see `TOKEN_WEIGHTED_ESTIMATORS`).
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
    block_causal: bool = False,
) -> MaskDraw:
    """Draw the masks of `num_samples` Monte-Carlo samples per row.

    Estimators (all unbiased for the ELBO except `quadrature` and `one_step`):

    * `mc`: `l` uniform on `1..L`, then a uniformly random subset of `l` completion tokens, weight `L / l`.
    * `antithetic`: samples come in pairs that share one random order `pi`: `pi[:l]` and `pi[l-1:]` (sizes `l` and
      `L - l + 1`, both uniform on `1..L`). The pair covers every token, overlapping in one, so a sample that masks
      little (high variance) is paired with one that masks much. `num_samples` must be even.
    * `stratified`: sample `k` of `K` draws its mask ratio from the `k`-th of `K` equal strata of (0, 1]
      (LLaDA-1.5's VRPO); the average over the `K` samples stays unbiased.
    * `quadrature`: deliberately **biased**. Every pair of samples splits one random order `pi` in halves, `pi[:a]`
      and `pi[a:]` with `a = floor(L / 2)` (`ceil` in every second pair): the time integral is replaced by its
      midpoint node (half the tokens masked), with an exact count of masked tokens, and every token is scored
      exactly once per pair (weight 2 per sample, so a pair's estimate is the sum of every token's log-probability
      with half the completion masked). Only the choice of halves is random, so the variance is far below `mc`'s;
      the bias is the midpoint rule's error, `sum_i [h_i(L/2) - mean_s h_i(s)]` with `h_i(s)` token `i`'s expected
      log-probability when `s` tokens are masked, and does not shrink with `K` (GDPO's semi-deterministic
      estimate with one node). `benchmarks/bench_elbo_variance.py` reports it next to the variance.
      `num_samples` must be even.
    * `control_variate`: unbiased, with the fully masked completion as a control variate. Sample 0 masks every
      token (its log-probabilities `g_i^full` are exact, no randomness); samples `1..K-1` mask `l` of the `L`
      tokens, `l` drawn from `q(l) ∝ L - l` on `1..L-1` (stratified over the `K - 1` samples by inverse CDF), and
      estimate the rest of the ELBO, `sum_l (1/l) E[sum_{i in M} (g_i(M) - g_i^full)]`, with weight `1 / (l q(l))`.
      A token's log-probability changes little with the number of tokens masked around it, so the differences are
      small where `mc`'s terms are large; `q` spends the samples on small `l`, where they are largest. The weights
      are per token (B, K, C): sample 0's token `i` carries `1 - (sum of the other samples' weights on i) / (K-1)`
      (times `K`, as every estimate is a mean over the `K` samples). `num_samples` must be >= 2; a one-token
      completion is scored exactly by the fully masked sample.
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

    `block_causal=True` draws for a block-diffusion model (see [`draw_block_masks`]): `mc`, `antithetic` and
    `stratified` then mask each block of `block_length` positions on its own.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    check_num_samples(num_samples, estimator)
    if not 0.0 <= p_mask_prompt < 1.0:
        raise ValueError(f"p_mask_prompt must be in [0, 1), got {p_mask_prompt}.")
    if estimator == "block_random" and not block_causal and (block_length is None or block_length < 1):
        raise ValueError(f"estimator='block_random' needs a positive block_length, got {block_length}.")

    valid = completion_mask.bool().unsqueeze(1).expand(-1, num_samples, -1)  # (B, K, C)
    device = completion_mask.device
    lengths = completion_mask.long().sum(-1, keepdim=True).expand(-1, num_samples)  # (B, K)

    context = ~valid if mask_padding else None
    if block_causal:
        masks, weights = draw_block_masks(valid, prompt_attention_mask, block_length, estimator, generator,
                                          completion_width)
    elif estimator == "one_step":
        masks = valid.clone()
        weights = (lengths > 0).float()
    elif estimator == "control_variate":
        masks, weights = _control_variate_masks(valid, lengths, generator, completion_width)
    elif estimator == "block_random":
        masks, weights, context = _block_random(valid, block_length, generator, completion_width)
    else:
        masks, weights = _subset_masks(valid, lengths, estimator, generator, completion_width)

    prompt_masks = None
    if p_mask_prompt > 0:
        if prompt_attention_mask is None:
            raise ValueError("p_mask_prompt > 0 needs prompt_attention_mask (which prompt positions are real tokens).")
        prompt_valid = prompt_attention_mask.bool().unsqueeze(1).expand(-1, num_samples, -1)
        draws = _uniform(prompt_valid.shape, generator, device, prompt_width, align="right")
        prompt_masks = (draws < p_mask_prompt) & prompt_valid
    return MaskDraw(masks, weights.to(device), prompt_masks, context)


def _subset_masks(valid: torch.Tensor, lengths: torch.Tensor, estimator: str, generator: Generators,
                  width: int | None):
    """`mc`, `stratified` and `antithetic` masks and their `L / l` weights (see [`draw_masks`]): a random subset of
    `l` of a row's `L` valid positions (B, K, C), `l` uniform on 1..L."""
    batch, num_samples, length = valid.shape
    device = valid.device
    ranks = _random_ranks(valid, generator, width)
    if estimator == "mc":
        u = random_uniform((batch, num_samples), generator, device)
    elif estimator == "stratified":
        strata = torch.arange(num_samples, device=device).unsqueeze(0)
        u = (strata + random_uniform((batch, num_samples), generator, device)) / num_samples
    elif estimator == "quadrature":
        return _quadrature_masks(valid, lengths, ranks)
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
    weights = torch.where(lengths > 0, lengths.float() / num_masked.clamp(min=1).float(), 0.0)
    return masks & valid, weights


def _quadrature_masks(valid: torch.Tensor, lengths: torch.Tensor, ranks: torch.Tensor):
    """`quadrature` masks and weights (see [`draw_masks`]): each pair splits its order in halves, `pi[:a]`, `pi[a:]`."""
    batch, num_samples, length = valid.shape
    pair_lengths = lengths[:, 0::2]
    odd_pair = torch.arange(num_samples // 2, device=valid.device) % 2
    split = (pair_lengths + odd_pair) // 2  # floor(L / 2), or ceil in every second pair
    first = ranks[:, 0::2] < split.unsqueeze(-1)
    masks = torch.stack([first, ~first], dim=2).view(batch, num_samples, length) & valid
    weights = torch.where(lengths > 0, 2.0, 0.0)
    return masks, weights


def _control_variate_masks(valid: torch.Tensor, lengths: torch.Tensor, generator: Generators, width: int | None):
    """`control_variate` masks and per-token weights (see [`draw_masks`]): sample 0 fully masked, the others `l` of
    `L` tokens with `l ~ q(l) ∝ L - l` on `1..L-1`, stratified."""
    batch, num_samples, length = valid.shape
    device = valid.device
    num_random = num_samples - 1
    ranks = _random_ranks(valid[:, 1:], generator, width)
    u = (torch.arange(num_random, device=device) + random_uniform((batch, num_random), generator, device)) / num_random
    total = lengths[:, :1].float()  # L, (B, 1)
    sizes = torch.arange(1, length + 1, device=device).float()  # l = 1..C
    q = (total - sizes).clamp(min=0) / (total * (total - 1) / 2).clamp(min=1)  # q(l) on 1..L-1, (B, C)
    num_masked = ((q.cumsum(-1).unsqueeze(1) < u.unsqueeze(-1)).sum(-1) + 1)  # inverse CDF, (B, K-1)
    has_random = lengths[:, 1:] >= 2
    num_masked = torch.where(has_random, torch.minimum(num_masked, (lengths[:, 1:] - 1).clamp(min=1)), 0)
    random_masks = (ranks < num_masked.unsqueeze(-1)) & valid[:, 1:]
    q_at = q.gather(-1, (num_masked - 1).clamp(min=0))
    factor = torch.where(has_random, 1.0 / (num_masked.clamp(min=1) * q_at.clamp(min=1e-12)), 0.0)  # 1 / (l q(l))
    random_weights = num_samples / num_random * factor.unsqueeze(-1) * random_masks.float()
    full_weights = num_samples * (1.0 - random_weights.sum(1) / num_samples) * valid[:, 0].float()
    masks = torch.cat([valid[:, :1], random_masks], dim=1)
    return masks, torch.cat([full_weights.unsqueeze(1), random_weights], dim=1)


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


def random_orders(completion_mask: torch.Tensor, num_orders: int, generator: Generators = None) -> torch.Tensor:
    """`num_orders` uniformly random generation orders per row, valid positions first. Shape (B, K, C)."""
    valid = completion_mask.bool().unsqueeze(1).expand(-1, num_orders, -1)
    return _random_ranks(valid, generator).argsort(dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Block-diffusion models (SDAR, LLaDA2): masks and orders block by block
# ---------------------------------------------------------------------------------------------------------------------

BLOCK_CAUSAL_REFUSED = {
    "block_random": "it already is the block-by-block ELBO, with the later blocks shown as masks; a block-causal model "
    "scores every block given the clean blocks before it in one pass, with no masked context after it",
    "control_variate": "its control variate (a sample masking the whole completion) and its proposal over the number "
    "of masked tokens are defined for one completion-wide draw, not for each block on its own",
}


def completion_block_slots(prompt_attention_mask: torch.Tensor | None, length: int, block_length: int) -> torch.Tensor:
    """Which block of the completion each completion position is in, (B, C): 0 for the block that holds its first
    token. Blocks are counted from each row's first real prompt token, so block 0 may begin inside the prompt (the
    prompt's last partial block continues into the completion)."""
    device = prompt_attention_mask.device if prompt_attention_mask is not None else None
    prompt_lengths = (prompt_attention_mask.long().sum(-1) if prompt_attention_mask is not None
                      else torch.zeros(1, dtype=torch.long))
    offsets = (prompt_lengths % block_length).unsqueeze(-1)
    return (offsets + torch.arange(length, device=device)) // block_length


def draw_block_masks(valid: torch.Tensor, prompt_attention_mask: torch.Tensor | None, block_length: int | None,
                     estimator: str, generator: Generators, width: int | None):
    """Masks and per-token weights (B, K, C) of a block-causal draw, for valid positions (B, K, C).

    The ELBO of a block-diffusion model is the sum over blocks of each block's masked-token ELBO given the clean blocks
    before it. `mc`, `antithetic` and `stratified` draw each block's mask on its own (its own `l_k` uniform on
    `1..L_k`, weight `L_k / l_k` on its tokens), so one sample holds an unbiased estimate of every block's ELBO and the
    sample's total estimates their sum; `quadrature` draws its complementary halves inside each block (biased, as
    for a whole completion). `one_step` masks every block whole: d1's one-step estimate, per block, given
    the clean blocks before it. Blocks are taken in a fixed number of slots (from `width`, the longest completion), so
    that a row's masks do not depend on the batch.
    """
    if estimator in BLOCK_CAUSAL_REFUSED:
        raise ValueError(f"estimator={estimator!r} does not apply to a block-causal model: "
                         f"{BLOCK_CAUSAL_REFUSED[estimator]}. Use 'mc', 'antithetic', 'stratified' or 'quadrature'.")
    if block_length is None or block_length < 1:
        raise ValueError(f"A block-causal draw needs a positive block_length, got {block_length}.")
    batch, num_samples, length = valid.shape
    if estimator == "one_step":
        return valid.clone(), (valid.sum(-1) > 0).float()
    slots = completion_block_slots(prompt_attention_mask, length, block_length).unsqueeze(1)  # (B or 1, 1, C)
    num_slots = (block_length + max(length, width or 0) - 2) // block_length + 1
    masks = torch.zeros_like(valid)
    weights = torch.zeros(valid.shape, device=valid.device)
    for slot in range(num_slots):
        in_block = valid & (slots == slot)
        block_masks, block_weights = _subset_masks(in_block, in_block.sum(-1), estimator, generator, width)
        masks |= block_masks
        weights += block_weights.unsqueeze(-1) * in_block
    return masks, weights


def block_orders(completion_mask: torch.Tensor, prompt_attention_mask: torch.Tensor | None, block_length: int,
                 num_orders: int, generator: Generators = None) -> torch.Tensor:
    """`num_orders` random generation orders per row that a block-diffusion model can follow: the blocks in sequence,
    a uniformly random order inside each block; valid positions first. Shape (B, K, C)."""
    valid = completion_mask.bool().unsqueeze(1).expand(-1, num_orders, -1)
    slots = completion_block_slots(prompt_attention_mask, valid.shape[-1], block_length).unsqueeze(1)
    keys = _uniform(valid.shape, generator, valid.device) + slots  # block first, then the random key inside it
    return keys.masked_fill(~valid, float("inf")).argsort(dim=-1)

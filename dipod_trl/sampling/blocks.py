"""Block-by-block decoding of block-diffusion LMs (SDAR, TraDo, LLaDA2), as their published samplers decode.

Attention is causal across blocks and bidirectional inside one, so a committed block never changes again: its keys
and values are computed once (under the block-causal mask) and cached exactly, and each denoising step recomputes
the current block only. Blocks are counted from each row's first real prompt token, as SDAR's `generate.py` and
LLaDA2's `generate` count them (absolute positions from the prompt's first token): the prompt's last partial block
is decoded in place by the first completion tokens, and a completion ends where prompt + completion fill whole blocks
(`ceil((prompt + gen_length) / block_length)` blocks in all), so `gen_length` need not be a multiple of
`block_length`.

A left-padded batch is laid out again so that every row's blocks sit on the same columns: row i starts after
`(Q - floor(P_i / B)) * B` padding columns (P_i its prompt length, Q the largest `floor(P_i / B)`), so all rows decode
the block at column `Q * B` first, and one span forward serves the whole batch. A row's tokens never depend on the
other rows.

The commit rule of each step is the published one, stated in `commit_published` beside the loop; `propose` is the
published sampling step (temperature, top-k, top-p, one multinomial draw per position), with the greedy rule
(argmax, confidence = its softmax probability in float64) at temperature 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import DiffusionLM
from ..models.block_mask import block_causal_mask
from ..models.kv_cache import CommittedBlocksCache
from ..randomness import Generators, generators_of_rows


def completion_mask_from_eos(completion_ids: torch.Tensor, eos_token_ids) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it (everything after the first EOS is padding)."""
    if not eos_token_ids:
        return torch.ones_like(completion_ids, dtype=torch.long)
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_token_ids), device=completion_ids.device))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()
    return (eos_before == 0).long()



# What the published block samplers do not have, refused with the reason (see docs/guide.md, "Block diffusion").
BLOCK_REFUSALS = {
    "remasking": "block-diffusion models decode with the published low-confidence rule only (SDAR's "
                 "low_confidence_static / _dynamic, LLaDA2's); use remasking='low_confidence'",
    "cfg_scale": "the published block samplers have no classifier-free guidance; use cfg_scale=0",
    "kv_cache": "block-diffusion models always cache the committed blocks exactly; the approximate Fast-dLLM caches "
                "(kv_cache, cache_refresh_steps) do not apply: leave them None",
    "editing_threshold": "LLaDA2.1's token editing (re-masking committed tokens) is not reproduced: its published "
                         "`generate` passes its block mask as 0/1 additive values, so the model attends past the "
                         "blocks and no block-causal reference exists to check it against; use editing_threshold=None",
}


@dataclass
class BlockCanvas:
    """The batch laid out on block-aligned columns (module docstring)."""

    x: torch.Tensor  # (batch, width) tokens: padding, prompt, masks
    valid: torch.Tensor  # (batch, width) True on the prompt and completion columns
    positions: torch.Tensor  # (batch, width) counted from each row's first prompt token
    first_block: int  # Q: the block every row decodes first
    end_block: torch.Tensor  # (batch,) one past each row's last block
    completion_start: torch.Tensor  # (batch,) column of each row's first completion token


def block_canvas(prompt_ids, attention_mask, gen_length: int, block_length: int, mask_id: int, fill_id: int
                 ) -> BlockCanvas:
    """Place each row's prompt so that its blocks, counted from its first real token, share columns with the others'."""
    lengths = attention_mask.long().sum(1)
    full = lengths // block_length
    first_block = int(full.max())
    lead = (first_block - full) * block_length
    end = lead + (lengths + gen_length + block_length - 1) // block_length * block_length
    width = int(end.max())
    x = prompt_ids.new_full((prompt_ids.shape[0], width), fill_id)
    columns = torch.arange(width, device=prompt_ids.device)
    for row in range(prompt_ids.shape[0]):
        start = int(lead[row])
        x[row, start : start + int(lengths[row])] = prompt_ids[row][attention_mask[row].bool()]
        x[row, start + int(lengths[row]) : int(end[row])] = mask_id
    valid = (columns >= lead[:, None]) & (columns < end[:, None])
    positions = (columns - lead[:, None]).clamp(min=0)
    return BlockCanvas(x, valid, positions, first_block, end // block_length, lead + lengths)


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens each of a block's `steps` steps commits: `block_length / steps`, the remainder first (both published
    samplers count the whole block, also for the prompt's partial block)."""
    base, remainder = divmod(block_length, steps)
    return [base + (step < remainder) for step in range(steps)]


def keep_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Logits below the k-th largest set to -inf (ties with it kept); None or 0 keeps all."""
    if not k:
        return logits
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -torch.inf)


def keep_top_p(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the most probable tokens up to and including the first whose cumulative probability
    exceeds `p`; None or >= 1 keeps all."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = torch.cat([torch.zeros_like(cumulative[..., :1], dtype=torch.bool), cumulative[..., :-1] > p], -1)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -torch.inf)


def propose(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's candidate token and its confidence (the published samplers' `x0, x0_p`), logits (rows, B, V).

    Temperature 0 is greedy: the argmax, with its softmax probability in float64 (LLaDA2.1's published rule, in
    LLaDA's precision). Otherwise the published step: logits / temperature, top-k, top-p, softmax, one multinomial
    draw per position, and the drawn token's probability. A list of generators draws each row from its own, so a row
    seeded like the published sampler's global RNG draws what it draws.
    """
    if temperature == 0:
        x0 = logits.argmax(dim=-1)
        return x0, F.softmax(logits.to(torch.float64), dim=-1).gather(-1, x0[..., None])[..., 0]
    probs = F.softmax(keep_top_p(keep_top_k(logits.float() / temperature, top_k), top_p), dim=-1)
    rows, block, vocab = probs.shape
    if isinstance(generator, (list, tuple)):
        x0 = torch.stack([torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generator)])
    else:
        x0 = torch.multinomial(probs.reshape(-1, vocab), 1, generator=generator).view(rows, block)
    return x0, probs.gather(-1, x0[..., None])[..., 0]


def top_per_row(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of each row's `k[row]` highest confidences."""
    k_max = int(k.max()) if k.numel() else 0
    top = confidence.topk(k_max, dim=1).indices
    keep = torch.arange(k_max, device=k.device)[None, :] < k[:, None]
    return torch.zeros_like(confidence, dtype=torch.bool).scatter_(1, top, keep)


def commit_published(confidence, masked, scheduled: int, threshold: float | None) -> torch.Tensor:
    """Which masked positions of the current block one step commits: the published rule.

    - no threshold (SDAR `low_confidence_static`, LLaDA2 with a threshold no confidence exceeds): the `scheduled`
      most confident masked positions;
    - threshold (SDAR `low_confidence_dynamic`, LLaDA2's `threshold`): every masked position whose confidence is
      above it, when at least `scheduled` are; otherwise the `scheduled` most confident.
    Never more than the masks left (LLaDA2's `min`; SDAR's top-k would then also pick filled positions and overwrite
    them with new predictions, prompt tokens included, which we do not reproduce).
    """
    confidence = confidence.masked_fill(~masked, -torch.inf)
    top = top_per_row(confidence, masked.sum(1).clamp(max=scheduled))
    if threshold is None:
        return top
    above = confidence > threshold
    return torch.where((above.sum(1) >= scheduled)[:, None], above, top)


class BlockDecoder:
    """The model calls of block decoding: the current block's logits, and committing a finished block.

    With the cache (default), the prompt's whole blocks are prefilled once and each committed block's keys/values are
    appended by one more forward of the block with its final tokens (as SDAR's sampler does); a step computes the
    current block only. Without it (`use_cache=False`, or a model without the block cache), each step recomputes
    every earlier block under the block-causal mask (as LLaDA2's sampler does): the same numbers, more compute.
    """

    def __init__(self, lm: DiffusionLM, canvas: BlockCanvas, block_length: int, use_cache: bool, stats):
        self.lm, self.canvas, self.block_length, self.stats = lm, canvas, block_length, stats
        self.cache = None
        if use_cache:
            self.cache = CommittedBlocksCache()
            prefill = canvas.first_block * block_length
            if prefill > 0:
                mask = block_causal_mask(canvas.valid[:, :prefill], block_length)
                out = lm.model(canvas.x[:, :prefill], attention_mask=mask,
                               position_ids=canvas.positions[:, :prefill], use_cache=True)
                self.cache = CommittedBlocksCache.of(out.cache)
                stats.count(canvas.x.shape[0], prefill, span=False)

    def logits(self, rows: torch.Tensor, start: int, end: int) -> torch.Tensor:
        x, valid, positions = self.canvas.x[rows], self.canvas.valid[rows], self.canvas.positions[rows]
        if self.cache is None:
            mask = block_causal_mask(valid, self.block_length, 0, end)
            self.stats.count(len(rows), end, span=False)
            return self.lm.model(x[:, :end], attention_mask=mask, position_ids=positions[:, :end]).logits[:, start:]
        mask = block_causal_mask(valid, self.block_length, start, end)
        self.stats.count(len(rows), end - start, span=True)
        return self.lm.model(x[:, start:end], attention_mask=mask, position_ids=positions[:, start:end],
                             past_key_values=self.cache,
                             cache_position=torch.arange(start, end, device=x.device)).logits

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Rows `keep` (boolean over the rows decoding) go on; the others' cache is dropped."""
        if self.cache is not None and len(self.cache) and not bool(keep.all()):
            self.cache = self.cache.select_rows(keep.nonzero().squeeze(1))

    def commit(self, rows: torch.Tensor, start: int, end: int) -> None:
        """Append the finished block's keys/values to the cache (nothing to do without one)."""
        if self.cache is None:
            return
        self.cache.appending = True
        try:
            self.logits(rows, start, end)
        finally:
            self.cache.appending = False


def stopped_rows(x, completion_start, first_column: int, end: int, mask_id: int, eos: torch.Tensor) -> torch.Tensor:
    """Rows that committed an EOS in their completion with no mask before it: their completion is final."""
    columns = torch.arange(first_column, end, device=x.device)
    region = x[:, first_column:end]
    is_eos = torch.isin(region, eos) & (columns[None, :] >= completion_start[:, None])
    first_eos = torch.where(is_eos, columns, end).min(dim=1).values
    first_mask = torch.where(region == mask_id, columns, end).min(dim=1).values
    return (first_eos < end) & (first_mask > first_eos)


def decode_blocks(lm: DiffusionLM, canvas: BlockCanvas, *, block_length: int, steps_per_block: int,
                  temperature: float, top_k: int | None, top_p: float | None, confidence_threshold: float | None,
                  generator: Generators, eos: torch.Tensor, use_cache: bool, stats) -> None:
    """Fill the canvas's masks block by block (in place). Rows stop after their last block, or, with `eos` ids, once
    an EOS is final (`stopped_rows`): the tokens up to it are those the published samplers return."""
    mask_id, x = lm.mask_token_id, canvas.x
    schedule = transfer_schedule(block_length, steps_per_block)
    decoder = BlockDecoder(lm, canvas, block_length, use_cache, stats)
    active = torch.arange(x.shape[0], device=x.device)
    for block in range(canvas.first_block, int(canvas.end_block.max())):
        start, end = block * block_length, (block + 1) * block_length
        for scheduled in schedule:
            masked = x[active, start:end] == mask_id
            if active.numel() == 0 or not masked.any():
                break
            logits = decoder.logits(active, start, end)
            drawing = masked.any(dim=1)  # rows with a full block draw nothing, as when decoded alone
            rows = active[drawing]
            x0, confidence = propose(logits[drawing], temperature, top_k, top_p, generators_of_rows(generator, rows))
            commit = commit_published(confidence, masked[drawing], scheduled, confidence_threshold)
            x[rows, start:end] = torch.where(commit, x0, x[rows, start:end])
            if eos.numel():
                going = ~stopped_rows(x[active], canvas.completion_start[active], canvas.first_block * block_length,
                                      end, mask_id, eos)
                active = active[going]
                decoder.keep_rows(going)
        going = canvas.end_block[active] > block + 1
        active = active[going]
        decoder.keep_rows(going)
        if active.numel():
            decoder.commit(active, start, end)


def block_steps(gen_length: int, block_length: int, steps: int | None, steps_per_block: int | None) -> int:
    """Denoising steps per block, from `steps_per_block` or from `steps` in total (`steps / blocks`, LLaDA's meaning,
    which needs `gen_length` to be a multiple of `block_length`)."""
    if (steps is None) == (steps_per_block is None):
        raise ValueError("Give exactly one of steps (in total) and steps_per_block (per block).")
    if steps_per_block is not None:
        if steps_per_block < 1:
            raise ValueError(f"steps_per_block must be positive, got {steps_per_block}.")
        return steps_per_block
    if gen_length % block_length != 0 or steps < 1 or steps % (gen_length // block_length) != 0:
        raise ValueError(
            f"steps ({steps}) in total needs gen_length ({gen_length}) to be a multiple of block_length "
            f"({block_length}) and steps to be a positive multiple of the number of blocks; or give steps_per_block "
            "(any gen_length: block-diffusion completions end where prompt + completion fill whole blocks)."
        )
    return steps // (gen_length // block_length)


def check_block_options(*, gen_length, block_length, temperature, top_k, top_p, confidence_threshold, remasking,
                        cfg_scale, kv_cache, cache_refresh_steps, editing_threshold) -> None:
    """Errors that name the option at fault, for block-diffusion sampling."""
    if gen_length < 1 or block_length < 1:
        raise ValueError(f"gen_length ({gen_length}) and block_length ({block_length}) must be positive.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a non-negative integer (0 or None keeps all tokens), got {top_k!r}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (None or 1 keeps all tokens), got {top_p!r}.")
    if confidence_threshold is not None and not 0 < confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be in (0, 1] (a probability), got {confidence_threshold!r}.")
    refused = {"remasking": remasking != "low_confidence", "cfg_scale": cfg_scale > 0,
               "kv_cache": kv_cache is not None or cache_refresh_steps is not None,
               "editing_threshold": editing_threshold is not None}
    for option, bad in refused.items():
        if bad:
            raise ValueError(f"{option}: {BLOCK_REFUSALS[option]}.")


def generate_blocks(lm: DiffusionLM, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, *, gen_length: int,
                    block_length: int, steps_per_block: int, temperature: float = 0.0, top_k: int | None = None,
                    top_p: float | None = None, confidence_threshold: float | None = None,
                    generator: Generators = None, eos_token_ids=(), stop_at_eos: bool = True, use_cache: bool = True,
                    stats=None):
    """Sample completions of a block-diffusion LM (the block-causal branch of `dipod_trl.generate`).

    Returns `(completion_ids, completion_mask)`: row i's completion runs from its prompt's end to the end of its last
    block (`ceil((P_i + gen_length) / block_length) * block_length - P_i` tokens, SDAR's `generate.py` output; LLaDA2's
    `generate` returns its first `gen_length`), the mask is 1 up to and including the first EOS and up to the row's
    end; columns past them hold the first EOS id (the pad id without EOS ids) with mask 0.
    """
    if lm.shift_logits:
        raise ValueError("Block-diffusion decoding needs logits aligned with their positions (shift_logits=False).")
    eos = torch.tensor(list(eos_token_ids), device=prompt_ids.device, dtype=prompt_ids.dtype)
    fill = int(eos[0]) if eos.numel() else (lm.pad_token_id if lm.pad_token_id is not None else lm.mask_token_id)
    canvas = block_canvas(prompt_ids, attention_mask, gen_length, block_length, lm.mask_token_id, fill)
    decode_blocks(lm, canvas, block_length=block_length, steps_per_block=steps_per_block, temperature=temperature,
                  top_k=top_k, top_p=top_p, confidence_threshold=confidence_threshold, generator=generator,
                  eos=eos if stop_at_eos else eos[:0],
                  use_cache=use_cache, stats=stats)
    x = canvas.x.masked_fill(canvas.x == lm.mask_token_id, fill)  # rows stopped at an EOS
    start, end = canvas.completion_start, canvas.end_block * block_length
    width = int((end - start).max())
    columns = start[:, None] + torch.arange(width, device=x.device)
    inside = columns < end[:, None]
    completion_ids = x.gather(1, columns.clamp(max=x.shape[1] - 1)).masked_fill(~inside, fill)
    return completion_ids, completion_mask_from_eos(completion_ids, eos_token_ids) * inside.long()

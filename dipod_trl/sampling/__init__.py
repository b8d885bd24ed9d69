"""Batched masked-diffusion generation, as LLaDA's reference sampler defines it (block-diffusion models, SDAR and
LLaDA2, decode block by block with an exact cache of committed blocks instead: `blocks.py`).

The completion canvas starts fully masked and is filled block by block, left to right (semi-autoregressive blocks of
`block_length` tokens). Inside a block, each of the block's `steps / num_blocks` denoising steps predicts every masked
position and commits ("transfers") a fixed number of them; the rest are remasked. Which ones are committed is the
remasking rule: the most confident predictions (`low_confidence` remasking, LLaDA's default), random ones, or the
ones with the largest top-2 margin / lowest entropy.

Everything is vectorized over the batch: rows with prompts of different lengths are left-padded and carry an
attention mask, and one row's tokens never depend on what else is in the batch.

Fast decoding (Fast-dLLM's two ideas, off by default):

- `kv_cache="prefix" | "dual"`: a full forward at the first step of each block records every layer's keys and values
  (`models/kv_cache.py`); the block's other steps recompute only the current block and everything after it
  (`"prefix"`: the prompt and finished blocks are read from the cache) or only the current block (`"dual"`: the
  not-yet-decoded suffix is read from the cache too). Cached keys/values go stale as the block fills in, so this is an
  approximation; `cache_refresh_steps=n` also refreshes with a full forward every n steps inside a block, and `n=1`
  is exact decoding.
- `confidence_threshold=c`: each step commits every masked position of the current block whose predicted token has
  probability above `c`, and at least as many as the fixed schedule would (the block's masked count over its steps
  left, rounded up, so at least one). A block thus never takes more than its `steps / num_blocks` steps and usually
  far fewer. With `steps = gen_length` the minimum is one token per step, Fast-dLLM's setting, and the threshold alone
  sets the parallelism; a threshold no prediction exceeds (e.g. 1.0) is the fixed schedule exactly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..guidance import model_logits
from ..models import DiffusionLM, as_diffusion_lm, unwrap_model
from ..options import REMASKING_RULES, check_fast_decoding
from ..randomness import Generators, generators_of_rows, random_uniform
from .blocks import block_steps, check_block_options, completion_mask_from_eos, generate_blocks


@dataclass
class GenerationStats:
    """What one `generate` call cost. `positions` sums rows x recomputed positions over all forwards: the compute
    that the forward count alone hides (a span forward over one block costs a fraction of a full forward)."""

    forwards: int = 0
    full_forwards: int = 0
    span_forwards: int = 0
    positions: int = 0

    def count(self, rows: int, positions: int, span: bool) -> None:
        self.forwards += 1
        self.span_forwards += int(span)
        self.full_forwards += int(not span)
        self.positions += rows * positions


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: Generators = None) -> torch.Tensor:
    """Perturb logits so that their argmax is a sample at `temperature` (temperature 0 returns the logits).

    Computed in float64: with low-precision Gumbel noise the perturbed scores tie or collapse and generation quality
    drops (LLaDA's reference sampler makes the same choice). `exp(l) / (-log u)^T` has the argmax of `l/T + Gumbel`.
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = random_uniform(logits.shape, generator, logits.device, dtype=torch.float64)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def get_num_transfer_tokens(block_mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """How many masked tokens each row commits at each of `steps` steps: equal shares, the remainder first.

    Equal shares match the linear noise schedule the model was trained with: each step removes the same fraction of
    the remaining masks in expectation.
    """
    mask_num = block_mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    step_index = torch.arange(steps, device=block_mask_index.device).unsqueeze(0)
    return (base + (step_index < remainder).long()).long()


def _confidence(logits: torch.Tensor, x0: torch.Tensor, remasking: str, generator: Generators) -> torch.Tensor:
    """Score of each predicted token; the highest-scoring masked positions are committed first."""
    if remasking == "random":
        return random_uniform(x0.shape, generator, x0.device, dtype=torch.float64)
    probs = F.softmax(logits.to(torch.float64), dim=-1)
    if remasking == "low_confidence":
        return torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    if remasking == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    # entropy: commit the positions the model is least uncertain about
    return (probs * torch.log(probs.clamp_min(1e-300))).sum(-1)


def _finished(completion: torch.Tensor, mask_token_id: int, eos_ids: torch.Tensor) -> torch.Tensor:
    """Rows whose completion is final: an EOS is committed and no masked position precedes it."""
    length = completion.shape[1]
    positions = torch.arange(length, device=completion.device).expand_as(completion)
    first_eos = torch.where(torch.isin(completion, eos_ids), positions, length).min(dim=1).values
    first_mask = torch.where(completion == mask_token_id, positions, length).min(dim=1).values
    return (first_eos < length) & (first_mask > first_eos)


def validate_generation_args(
    *, gen_length: int, block_length: int, steps: int, temperature: float, remasking: str, cfg_scale: float
) -> int:
    """Check the schedule arguments and return the number of blocks; errors name the argument at fault."""
    if gen_length < 1:
        raise ValueError(f"gen_length must be positive, got {gen_length}.")
    if block_length < 1:
        raise ValueError(f"block_length must be positive, got {block_length}.")
    if gen_length % block_length != 0:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}).")
    num_blocks = gen_length // block_length
    if steps < 1 or steps % num_blocks != 0:
        raise ValueError(
            f"steps ({steps}) must be a positive multiple of the number of blocks (gen_length / block_length = "
            f"{num_blocks}), so that every block gets the same number of denoising steps."
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if remasking not in REMASKING_RULES:
        raise ValueError(f"remasking must be one of {REMASKING_RULES}, got {remasking!r}.")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}.")
    return num_blocks


_WARNED_NO_CACHE: set[str] = set()


def _cache_supported(lm: DiffusionLM) -> bool:
    """Whether the model serves the block cache; warns once per model class when it does not."""
    if lm.supports_block_kv_cache:
        return True
    name = type(unwrap_model(lm.model)).__name__
    if name not in _WARNED_NO_CACHE:
        _WARNED_NO_CACHE.add(name)
        warnings.warn(
            f"kv_cache: {name} does not implement the block key/value cache (supports_block_kv_cache), so it decodes "
            "exactly, without a cache. This warning is shown once.",
            stacklevel=3,
        )
    return False


class BlockLogits:
    """Logits of the current block's positions, from a full forward or from a span forward over the block cache.

    The cache is rebuilt with a full forward at the first step of each block and every `refresh_steps` steps inside
    it; in between, `"prefix"` recomputes the block and everything after it, `"dual"` the block alone.
    """

    def __init__(self, lm: DiffusionLM, kv_cache: str | None, refresh_steps: int | None, cfg_scale: float,
                 stats: GenerationStats):
        self.lm, self.kv_cache, self.refresh_steps = lm, kv_cache, refresh_steps
        self.cfg_scale, self.stats = cfg_scale, stats
        self.cache = None

    def new_block(self) -> None:
        self.cache = None

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Rows `keep` (boolean over the current rows) go on generating; drop the others' cache."""
        if self.cache is not None and not bool(keep.all()):
            self.cache = self.cache.select_rows(keep.nonzero().squeeze(1))

    def __call__(self, x, attention_mask, prompt_index, start: int, end: int, step: int) -> torch.Tensor:
        rows, length = x.shape
        if self.kv_cache is None:
            self.stats.count(rows, length, span=False)
            return model_logits(self.lm, x, attention_mask, prompt_index, self.cfg_scale)[:, start:end]
        refresh = self.refresh_steps is not None and step % self.refresh_steps == 0
        if self.cache is None or refresh:
            self.stats.count(rows, length, span=False)
            logits, self.cache = self.lm.logits_and_cache(x, attention_mask)
            return logits[:, start:end]
        span_end = end if self.kv_cache == "dual" else length
        self.stats.count(rows, span_end - start, span=True)
        return self.lm.span_logits(x, attention_mask, self.cache, start, span_end)[:, : end - start]


def check_prompt_length(
    lm: DiffusionLM, attention_mask: torch.Tensor, total_length: int, max_prompt_length: int | None
) -> None:
    """Refuse prompts longer than `max_prompt_length`, and sequences longer than the model's position limit."""
    longest = int(attention_mask.sum(dim=1).max().item()) if attention_mask.numel() else 0
    if max_prompt_length is not None and longest > max_prompt_length:
        raise ValueError(
            f"prompt_ids: a prompt has {longest} tokens, more than max_prompt_length={max_prompt_length}. Shorten or "
            "truncate the prompts (left truncation keeps the question's end)."
        )
    limit = getattr(lm.config, "max_position_embeddings", None) or getattr(lm.config, "max_sequence_length", None)
    if limit is not None and total_length > limit:
        raise ValueError(
            f"prompt_ids: prompt ({attention_mask.shape[1]} positions) plus completion makes {total_length} positions, "
            f"more than the model's limit of {limit}."
        )


@torch.no_grad()
def generate(
    model,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    block_length: int,
    steps: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    generator: Generators = None,
    tokenizer=None,
    mask_token_id: int | None = None,
    eos_token_ids=None,
    max_prompt_length: int | None = None,
    stop_at_eos: bool = True,
    kv_cache: str | None = None,
    cache_refresh_steps: int | None = None,
    confidence_threshold: float | None = None,
    return_stats: bool = False,
    steps_per_block: int | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    editing_threshold: float | None = None,
):
    """Sample completions for a batch of (left-padded) prompts from a masked diffusion LM.

    Args:
        model: a Hugging Face diffusion LM (the adapter is picked from its config) or a [`DiffusionLM`].
        prompt_ids: (batch, prompt_length) token ids, left-padded.
        attention_mask: (batch, prompt_length), 1 on real prompt tokens, 0 on padding. Defaults to all ones.
        gen_length: completion length (the canvas that starts fully masked).
        block_length: tokens per semi-autoregressive block; `gen_length` must be a multiple of it (not for
            block-diffusion models: their completions end where prompt + completion fill whole blocks).
        steps: denoising steps in total, split equally between blocks; must be a multiple of the number of blocks.
        steps_per_block: instead of `steps`, the denoising steps of each block (`steps = steps_per_block x blocks`).
        temperature: Gumbel-max sampling temperature; 0 is greedy.
        remasking: `low_confidence` | `random` | `margin` | `entropy`, which predictions a step commits first.
        cfg_scale: classifier-free guidance scale (0 disables it).
        generator: a `torch.Generator` for reproducible sampling (the global RNG when None), or one generator per
            row, which makes each row's sample independent of the rest of the batch.
        tokenizer, mask_token_id: where to find the mask token if the model's config has none.
        eos_token_ids: ids that end a completion (default: the model's and tokenizer's EOS ids).
        max_prompt_length: refuse longer prompts with a `ValueError` instead of silently scoring a cut prompt.
        stop_at_eos: stop denoising a row once an EOS is committed and every position before it is filled: what
            follows is padding, and a row's tokens never depend on the other rows. The positions after the EOS are
            then filled with the first id of `eos_token_ids` (whichever EOS the row committed). With `False`, the
            whole canvas is denoised, as LLaDA's reference sampler does.
        kv_cache, cache_refresh_steps, confidence_threshold: fast decoding, the fields of
            [`FastDecodingArguments`] (checked by the same function). kv_cache: None (exact), `"prefix"` or `"dual"`:
            reuse keys/values between the steps of a block (module docstring). A model without cache support
            decodes exactly, with a one-time warning. Not with CFG.
        cache_refresh_steps: also refresh the cache with a full forward every n steps inside a block (1 is exact).
        confidence_threshold: commit every masked position of the block above this probability each step, and at
            least the fixed schedule's count (module docstring); None commits the fixed count.
        return_stats: also return a [`GenerationStats`] (model forwards, recomputed positions).
        top_k, top_p, editing_threshold: block-diffusion models (SDAR, LLaDA2) only: the published samplers'
            top-k / nucleus filters at temperature > 0; LLaDA2.1's token editing is refused (`sampling/blocks.py`).

    Block-diffusion models (`lm.block_causal`: SDAR, TraDo, LLaDA2) decode block by block with the exact cache of
    committed blocks, as their published samplers do ([`generate_blocks`], `sampling/blocks.py`); there
    `confidence_threshold` is the published threshold rule and `remasking` must be `low_confidence`.

    Returns:
        `(completion_ids, completion_mask)`, both (batch, gen_length); the mask is 1 up to and including the first
        EOS and 0 after it. With `return_stats`, `(completion_ids, completion_mask, stats)`.
    """
    lm = as_diffusion_lm(model, tokenizer, mask_token_id=mask_token_id)
    if lm.block_causal:
        return _generate_block_causal(
            lm, prompt_ids, attention_mask, gen_length=gen_length, block_length=block_length, steps=steps,
            steps_per_block=steps_per_block, temperature=temperature, top_k=top_k, top_p=top_p,
            confidence_threshold=confidence_threshold, remasking=remasking, cfg_scale=cfg_scale, generator=generator,
            eos_token_ids=eos_token_ids, max_prompt_length=max_prompt_length, stop_at_eos=stop_at_eos,
            kv_cache=kv_cache, cache_refresh_steps=cache_refresh_steps, editing_threshold=editing_threshold,
            return_stats=return_stats)
    steps = _total_steps(gen_length, block_length, steps, steps_per_block, top_k, top_p, editing_threshold)
    num_blocks = validate_generation_args(
        gen_length=gen_length,
        block_length=block_length,
        steps=steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
    )
    check_fast_decoding(kv_cache=kv_cache, cache_refresh_steps=cache_refresh_steps,
                        confidence_threshold=confidence_threshold, cfg_scale=cfg_scale)
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (batch, length), got shape {tuple(prompt_ids.shape)}.")
    batch, prompt_length = prompt_ids.shape
    device = prompt_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    elif attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match prompt_ids {tuple(prompt_ids.shape)}."
        )
    check_prompt_length(lm, attention_mask, prompt_length + gen_length, max_prompt_length)
    eos_token_ids = lm.eos_token_ids if eos_token_ids is None else tuple(eos_token_ids)

    x = torch.cat([prompt_ids, prompt_ids.new_full((batch, gen_length), lm.mask_token_id)], dim=1)
    full_attention = torch.cat([attention_mask.long(), attention_mask.new_ones((batch, gen_length)).long()], dim=1)
    prompt_index = torch.zeros_like(x, dtype=torch.bool)
    prompt_index[:, :prompt_length] = attention_mask.bool()
    steps_per_block = steps // num_blocks
    eos_tensor = torch.tensor(list(eos_token_ids), device=device, dtype=x.dtype)
    stopping = stop_at_eos and eos_tensor.numel() > 0
    active = torch.arange(batch, device=device)  # rows still generating

    stats = GenerationStats()
    if kv_cache is not None and not _cache_supported(lm):
        kv_cache = cache_refresh_steps = None
    scorer = BlockLogits(lm, kv_cache, cache_refresh_steps, cfg_scale, stats)

    for block in range(num_blocks):
        start = prompt_length + block * block_length
        end = start + block_length
        num_transfer = get_num_transfer_tokens(x[:, start:end] == lm.mask_token_id, steps_per_block)
        scorer.new_block()
        for step in range(steps_per_block):
            if active.numel() == 0:
                break
            xa = x[active]
            block_masked = xa[:, start:end] == lm.mask_token_id
            if confidence_threshold is None:
                k = num_transfer[active, step]
            else:  # at least the fixed schedule's share of what is left: the block ends within its steps
                k = (block_masked.sum(dim=1) + steps_per_block - step - 1) // (steps_per_block - step)
            if int(k.max().item()) == 0:  # the schedule commits nothing more in this block
                break
            # Only the current block can be committed, so only its positions are scored (the model still sees all).
            logits = scorer(xa, full_attention[active], prompt_index[active], start, end, step)
            x0, transfer = _tokens_to_commit(logits, block_masked, k, temperature, remasking, confidence_threshold,
                                             generators_of_rows(generator, active))
            xa[:, start:end] = torch.where(transfer, x0, xa[:, start:end])
            x[active] = xa
            if stopping:
                going = ~_finished(xa[:, prompt_length:], lm.mask_token_id, eos_tensor)
                active = active[going]
                scorer.keep_rows(going)

    if stopping:
        # Rows that stopped early still hold masks after their first EOS: pad them with the first EOS id.
        x[:, prompt_length:] = x[:, prompt_length:].masked_fill(x[:, prompt_length:] == lm.mask_token_id, eos_tensor[0])
    completion_ids = x[:, prompt_length:]
    completion_mask = completion_mask_from_eos(completion_ids, eos_token_ids)
    if return_stats:
        return completion_ids, completion_mask, stats
    return completion_ids, completion_mask


def _tokens_to_commit(logits, block_masked, k, temperature, remasking, confidence_threshold, row_generators):
    """One denoising step's choice for a block: the sampled tokens `x0` and which masked positions take them (the
    `k` most confident of each row, plus, with a threshold, every one above it)."""
    x0 = add_gumbel_noise(logits, temperature, row_generators).argmax(dim=-1)
    confidence = _confidence(logits, x0, remasking, row_generators).masked_fill(~block_masked, -torch.inf)
    # Per-row top-k with a per-row k: take the k_max best, keep the first k of each row.
    k_max = int(k.max().item())
    top = confidence.topk(k_max, dim=1).indices
    keep = torch.arange(k_max, device=logits.device).unsqueeze(0) < k.unsqueeze(1)
    transfer = torch.zeros_like(block_masked).scatter_(1, top, keep)
    if confidence_threshold is not None:
        probability = torch.gather(F.softmax(logits.to(torch.float64), dim=-1), -1, x0.unsqueeze(-1))
        transfer |= block_masked & (probability.squeeze(-1) > confidence_threshold)
    return x0, transfer


def _total_steps(gen_length, block_length, steps, steps_per_block, top_k, top_p, editing_threshold) -> int:
    """LLaDA/Dream: `steps`, or `steps_per_block x blocks`; the block-diffusion-only options refused."""
    for name, value in (("top_k", top_k), ("top_p", top_p), ("editing_threshold", editing_threshold)):
        if value is not None:
            raise ValueError(f"{name} applies to block-diffusion models (SDAR, LLaDA2) only; leave it None here.")
    if (steps is None) == (steps_per_block is None):
        raise ValueError("Give exactly one of steps (in total) and steps_per_block (per block).")
    if steps_per_block is None:
        return steps
    if steps_per_block < 1 or block_length < 1:
        raise ValueError(f"steps_per_block ({steps_per_block}) and block_length ({block_length}) must be positive.")
    return steps_per_block * max(gen_length // block_length, 1)


def _generate_block_causal(lm, prompt_ids, attention_mask, *, gen_length, block_length, steps, steps_per_block,
                           eos_token_ids, max_prompt_length, return_stats, kv_cache, cache_refresh_steps, remasking,
                           cfg_scale, editing_threshold, **sampling):
    """`generate` for block-diffusion models: the checks, then [`generate_blocks`]."""

    check_block_options(gen_length=gen_length, block_length=block_length, temperature=sampling["temperature"],
                        top_k=sampling["top_k"], top_p=sampling["top_p"],
                        confidence_threshold=sampling["confidence_threshold"], remasking=remasking,
                        cfg_scale=cfg_scale, kv_cache=kv_cache, cache_refresh_steps=cache_refresh_steps,
                        editing_threshold=editing_threshold)
    steps_per_block = block_steps(gen_length, block_length, steps, steps_per_block)
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (batch, length), got shape {tuple(prompt_ids.shape)}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    elif attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match prompt_ids {tuple(prompt_ids.shape)}."
        )
    whole_blocks = (int(attention_mask.sum(1).max()) + gen_length + block_length - 1) // block_length * block_length
    check_prompt_length(lm, attention_mask, whole_blocks, max_prompt_length)
    eos_token_ids = lm.eos_token_ids if eos_token_ids is None else tuple(eos_token_ids)
    stats = GenerationStats()
    completion_ids, completion_mask = generate_blocks(
        lm, prompt_ids, attention_mask, gen_length=gen_length, block_length=block_length,
        steps_per_block=steps_per_block, eos_token_ids=eos_token_ids, stats=stats, **sampling)
    return (completion_ids, completion_mask, stats) if return_stats else (completion_ids, completion_mask)

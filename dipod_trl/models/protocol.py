"""The protocol every sampler and estimator talks to: a masked diffusion LM with its mask id, stop ids, and logits
aligned with the inputs ([`DiffusionLM`]), and what a model family declares to get there ([`FamilyTraits`]).

This module is the bottom of `dipod_trl.models`: the model implementations and the loaders import it, it imports none
of them. [`as_diffusion_lm`](adapters.py) builds a `DiffusionLM` from a model and its family's traits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .padding import honours_attention_mask, logits_without_padding


@dataclass(frozen=True)
class FamilyTraits:
    """What a model family does differently from a plain masked LM, declared once as `diffusion_traits` on its model
    class (and looked up by `model_type` for the same family's published remote-code classes)."""

    # mask id used when the config names none (LLaDA: 126336); the tokenizer's mask token comes after it
    default_mask_token_id: int | None = None
    # tokens that also end a completion, after the model's EOS (which stays first: it fills the tail); by name in the
    # tokenizer's vocabulary, by id without a tokenizer. Empty: the tokenizer's EOS goes first instead.
    stop_tokens: tuple[tuple[str, int], ...] = ()
    # the hidden state at i scores position i + 1 (Dream keeps the autoregressive convention)
    shift_logits: bool = False
    # padding is passed as the (batch, 1, query, key) boolean mask plus positions (Dream's published convention)
    pairwise_attention_mask: bool = False
    # attends causally across blocks, bidirectionally inside one: the sampler decodes block by block with an exact
    # cache of committed blocks, and the ELBO is the sum of per-block ELBOs given clean earlier blocks (SDAR, LLaDA2)
    block_causal: bool = False
    # the block length the family's published sampler uses by default (SDAR 4, LLaDA2 32); None: no such default
    default_block_length: int | None = None


MASKED_LM_TRAITS = FamilyTraits()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP/DeepSpeed (`.module`) and PEFT (`.base_model.model`) wrappers: the model that has the config."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    return model


def padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count attended tokens only, so a left-padded row has the positions of the unpadded row."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def first_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """True at each row's first attended position (and at position 0): the positions with no real predecessor."""
    after_pad = torch.cat([torch.ones_like(attention_mask[:, :1]), 1 - attention_mask[:, :-1]], dim=1)
    return after_pad.bool() & attention_mask.bool()


def shift_onto_positions(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Shifted logits (hidden state i scores position i+1) moved onto the positions they score. A row's first real
    token has no real predecessor: it keeps its own scores, as in the unpadded row (the pad position before it would
    make them depend on the padding); so does position 0."""
    shifted = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    if attention_mask is None:
        return shifted
    return torch.where(first_real_token(attention_mask).unsqueeze(-1), logits, shifted)


@dataclass
class DiffusionLM:
    """A masked diffusion LM behind the common protocol.

    `model` is called as given (it may be a DDP, DeepSpeed or PEFT wrapper, so that gradients flow through the
    wrapper); the ids were read from the unwrapped model's config or from the tokenizer.
    """

    model: torch.nn.Module
    mask_token_id: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    shift_logits: bool = False
    pairwise_attention_mask: bool = False
    block_causal: bool = False
    default_block_length: int | None = None

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The model without DDP/DeepSpeed/PEFT wrappers."""
        return unwrap_model(self.model)

    @property
    def config(self):
        return self.unwrapped.config

    @property
    def supports_block_kv_cache(self) -> bool:
        """Whether the model's class implements the block key/value cache (`dipod_trl.models.kv_cache`)."""
        return bool(getattr(self.unwrapped, "supports_block_kv_cache", False))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of shape (batch, length, vocab) where `logits[:, i]` scores the token at position i."""
        if attention_mask is not None and not honours_attention_mask(self):
            return logits_without_padding(self, input_ids, attention_mask)
        kwargs = {}
        if attention_mask is not None and self.pairwise_attention_mask:
            # Padded queries keep their own key so that no attention row is empty (an empty row would be NaN and leak
            # through the values).
            keep = attention_mask.bool()[:, None, None, :]
            eye = torch.eye(input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
            kwargs["attention_mask"] = keep | eye
            kwargs["position_ids"] = padded_positions(attention_mask)
        elif attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        logits = self.model(input_ids, **kwargs).logits
        if self.shift_logits:
            logits = shift_onto_positions(logits, attention_mask)
        return logits

    def logits_and_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, object]:
        """One full forward: aligned logits (as `logits`) and the `BlockKVCache` of every layer's keys and values."""
        output = self.model(input_ids, attention_mask=attention_mask, position_ids=padded_positions(attention_mask),
                            use_cache=True)
        logits = output.logits
        if self.shift_logits:
            logits = shift_onto_positions(logits, attention_mask)
        return logits, output.cache  # transformers' name of the `past_key_values` output field

    def span_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache, start: int, end: int
    ) -> torch.Tensor:
        """Aligned logits of positions `[start, end)` of the full-length `input_ids`, recomputing only that span (the
        keys/values of other positions are read from `cache`, built by `logits_and_cache`).

        With shifted logits the score of position i comes from hidden state i-1, so the span recomputed is
        `[start - 1, end)` (its last hidden state is not needed for a score, but its keys/values are fresh).
        """
        first = max(start - 1, 0) if self.shift_logits else start
        positions = padded_positions(attention_mask)
        logits = self.model(input_ids[:, first:end], attention_mask=attention_mask,
                            position_ids=positions[:, first:end], past_key_values=cache,
                            cache_position=torch.arange(first, end, device=input_ids.device)).logits
        if not self.shift_logits:
            return logits
        own = logits[:, start - first:]  # hidden states of [start, end)
        previous = logits[:, :-1] if first < start else torch.cat([own[:, :1], own[:, :-1]], dim=1)
        # As in `logits`: a row's first real token keeps its own scores.
        return torch.where(first_real_token(attention_mask)[:, start:end].unsqueeze(-1), own, previous)

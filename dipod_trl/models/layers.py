"""The one set of transformer primitives that the tiny model, LLaDA and Dream are built from: RMSNorm, rotary
embeddings, positions that skip padding, bidirectional attention with a padding mask and the block key/value cache,
and [`DiffusionPreTrainedModel`], the shared `PreTrainedModel` body (weight init, embedding accessors, forward).

A family supplies its config, its blocks (called as `block(x, cos, sin, mask, cache, start)`) and where its modules
live; the forward pass, padding, positions and cache handling are written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .kv_cache import BlockKVCache, span_start
from .protocol import MASKED_LM_TRAITS, FamilyTraits, padded_positions
from .published_code_compat import complete_for_published_code


@dataclass
class DiffusionLMOutput(ModelOutput):
    """Logits (as the family defines them), and the [`BlockKVCache`] of a full forward run with `use_cache=True`.

    transformers 5 names the cache field `cache`; `output.past_key_values` reads the same field.
    """

    logits: torch.Tensor | None = None
    cache: BlockKVCache | None = None


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then scaled by the weight in the input's dtype (as LLaDA and Dream
    publish it)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (batch, 1, length, head_dim) for the rotary embedding at `position_ids`, in the precision the
    rotation runs in: float32 for half-precision models (as published), the model's own for float32/float64."""
    compute = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float) / head_dim)
    angles = position_ids.to(compute).unsqueeze(-1) * inv_freq.to(compute)
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (batch, heads, length, head_dim) in the precision of `cos`/`sin` and return it in its own dtype."""
    xc = x.to(cos.dtype)
    x1, x2 = xc.chunk(2, dim=-1)
    return (xc * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


def default_positions(attention_mask: torch.Tensor | None, length: int, start: int, span: int, device) -> torch.Tensor:
    """Positions of `[start, start + span)` of a sequence of `length`: counted from each row's first real token under
    a (batch, length) padding mask, else 0, 1, 2, ..."""
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.arange(start, start + span, device=device).unsqueeze(0)
    return padded_positions(attention_mask)[:, start : start + span]


def attention_keep_mask(
    attention_mask: torch.Tensor | None, query_length: int, start: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """The SDPA mask of queries `[start, start + query_length)` over all keys, or None when nothing is masked.

    A (batch, keys) padding mask masks padded keys; each query keeps its own key so that no attention row is empty (an
    empty row is NaN and would leak through the values). A (batch, 1, queries, keys) boolean mask is used as given
    (Dream's published convention); a float one is an additive bias.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 4:
        mask = attention_mask
        if mask.shape[-2] != query_length:
            mask = mask[..., start : start + query_length, :]
        return mask if mask.dtype == torch.bool else mask.to(dtype)
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must be (batch, length) or (batch, 1, query, key), got {tuple(attention_mask.shape)}."
        )
    if bool(attention_mask.all()):
        return None  # no padding: leave SDPA free to pick the fused kernels
    keys = attention_mask.shape[-1]
    own_key = torch.arange(keys, device=attention_mask.device) == torch.arange(
        start, start + query_length, device=attention_mask.device
    ).unsqueeze(-1)
    return attention_mask.bool()[:, None, None, :] | own_key


def bidirectional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    layer: int,
    cache: BlockKVCache | None,
    start: int | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Full attention over all keys (grouped-query when there are fewer key/value heads). A full forward with a cache
    records this layer's keys/values into it; a span forward (`start` set) reads the keys/values outside the span
    from it."""
    if cache is not None and start is None:
        cache.store(layer, k, v)
    elif cache is not None:
        k, v = cache.with_span(layer, k, v, start)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=q.shape[1] != k.shape[1]
    )


def _set_submodule(root: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, value)


class DiffusionPreTrainedModel(PreTrainedModel):
    """The body LLaDA, Dream and the tiny model share: weight init, embedding accessors, and a forward pass over
    blocks with padding, default positions, rotary embeddings and the block key/value cache.

    `forward(input_ids, attention_mask=None, position_ids=None)` runs all positions; with `use_cache=True` the output
    carries a [`BlockKVCache`]; `past_key_values=cache, cache_position=torch.arange(start, end)` recomputes the span
    `[start, end)` only (the contract is in `kv_cache.py`). Positions default to the running count of attended tokens,
    so a left-padded row has the positions (and logits) of the unpadded row.
    """

    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    supports_block_kv_cache = True
    _supports_sdpa = True
    diffusion_traits: ClassVar[FamilyTraits] = MASKED_LM_TRAITS
    # dotted module paths, and the config key holding the init scale
    input_embeddings_path: ClassVar[str]
    output_embeddings_path: ClassVar[str]
    init_std_key: ClassVar[str] = "initializer_range"
    # where the family's published modeling code lives on the hub, for `auto_map` entries of saved folders (None: the
    # family has none); and the tokenizer class its checkpoints load with (None: `AutoTokenizer`)
    published_code_repo: ClassVar[str | None] = None
    # the family's name, as the model card states it
    family_name: ClassVar[str] = "masked diffusion LM"
    family_tokenizer_class: ClassVar[type | None] = None

    # What each family defines.
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def head_dim_and_theta(self) -> tuple[int, float]:
        raise NotImplementedError

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and output layer."""
        raise NotImplementedError

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=getattr(self.config, self.init_std_key))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.get_submodule(self.input_embeddings_path)

    def set_input_embeddings(self, value):
        _set_submodule(self, self.input_embeddings_path, value)

    def get_output_embeddings(self):
        try:
            return self.get_submodule(self.output_embeddings_path)
        except AttributeError:  # an output layer tied to the input embeddings without a module of its own
            return None

    def set_output_embeddings(self, value):
        _set_submodule(self, self.output_embeddings_path, value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, then the folder completed (see `published_code_compat.py`) so that the
        published code loads it under transformers 4.x."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.published_code_repo is not None and kwargs.get("is_main_process", True):
            complete_for_published_code(str(save_directory), self.config, self.name_or_path, self.published_code_repo)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | str | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: BlockKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        cache: BlockKVCache | None = None,
        **kwargs,
    ) -> DiffusionLMOutput:
        if isinstance(attention_mask, str):  # Dream's published sampler passes "full": nothing masked
            attention_mask = None
        past_key_values = past_key_values if past_key_values is not None else cache
        start = span_start(cache_position) if past_key_values is not None else None
        if start is None and past_key_values is not None:
            raise ValueError("past_key_values: a span forward needs the span's cache_position (see kv_cache.py).")
        span = input_ids.shape[1]
        if position_ids is None:
            length = attention_mask.shape[-1] if attention_mask is not None else (start or 0) + span
            position_ids = default_positions(attention_mask, length, start or 0, span, input_ids.device)
        x = self.get_input_embeddings()(input_ids)
        cos, sin = rotary_cos_sin(position_ids, *self.head_dim_and_theta(), x.dtype)
        mask = attention_keep_mask(attention_mask, span, start or 0, x.dtype)
        cache = past_key_values if start is not None else (BlockKVCache() if use_cache else None)
        for block in self.blocks():
            x = block(x, cos, sin, mask, cache, start)
        return DiffusionLMOutput(logits=self.output_logits(x), cache=cache if start is None else None)

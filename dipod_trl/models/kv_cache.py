"""The block key/value cache that masked-diffusion decoding reuses between denoising steps.

Unlike an autoregressive cache, nothing is appended: one full forward over the whole sequence (prompt + canvas) records
every layer's keys and values, and later forwards recompute only a span of positions `[start, end)` while the keys
and values outside the span are read from the cache (Fast-dLLM's block cache). With `end` = the sequence's end the
span is the current block and everything after it ("prefix" cache); with `end` = the block's end the not-yet-decoded
suffix is read from the cache as well ("dual" cache). Refreshing the cache with a full forward at every step is exact
decoding.

The contract a model implements to support it (the tiny model, LLaDA and Dream do; `supports_block_kv_cache = True`
on the model class says so):

- `model(input_ids, attention_mask=mask, position_ids=pos, use_cache=True)` over the whole sequence (length T) returns
  an output whose `past_key_values` is a `BlockKVCache` holding each layer's keys and values (keys after the rotary
  embedding) for all T positions.
- `model(input_ids[:, start:end], attention_mask=mask, position_ids=pos[:, start:end], past_key_values=cache,
  cache_position=torch.arange(start, end))` returns logits for the span's positions only. `attention_mask` is the
  full-length (batch, T) padding mask over keys. The span's queries attend to all T keys: the cache's outside the
  span, freshly computed ones inside it. The cache itself is not modified.
"""

from __future__ import annotations

import torch


class BlockKVCache:
    """Per-layer keys and values, each of shape (batch, kv_heads, T, head_dim), of one full forward pass."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def seq_length(self) -> int:
        return self.keys[0].shape[-2] if self.keys else 0

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Record layer `layer`'s keys and values of a full forward (layers are stored in order)."""
        if layer != len(self.keys):
            raise ValueError(f"BlockKVCache: layer {layer} stored out of order (have {len(self.keys)} layers).")
        self.keys.append(keys.detach())
        self.values.append(values.detach())

    def with_span(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s full-length keys and values with positions `[start, start + span)` replaced by the fresh
        `keys`/`values` of the span. The cache is left as it is."""
        end = start + keys.shape[-2]
        cached_k, cached_v = self.keys[layer], self.values[layer]
        if end > cached_k.shape[-2]:
            raise ValueError(f"BlockKVCache: span [{start}, {end}) is beyond the cached length {cached_k.shape[-2]}.")
        full_k = torch.cat([cached_k[..., :start, :], keys, cached_k[..., end:, :]], dim=-2)
        full_v = torch.cat([cached_v[..., :start, :], values, cached_v[..., end:, :]], dim=-2)
        return full_k, full_v

    def select_rows(self, rows: torch.Tensor) -> BlockKVCache:
        """The cache of a subset of batch rows (the sampler drops rows that have finished)."""
        out = BlockKVCache()
        out.keys = [k[rows] for k in self.keys]
        out.values = [v[rows] for v in self.values]
        return out


def span_start(cache_position: torch.Tensor | None) -> int | None:
    """The first position of a span forward (None for a full forward), checking the span is contiguous."""
    if cache_position is None:
        return None
    start = int(cache_position[0])
    expected = torch.arange(start, start + cache_position.numel(), device=cache_position.device)
    if not torch.equal(cache_position.reshape(-1), expected):
        raise ValueError("cache_position must be a contiguous range of positions (a span of the sequence).")
    return start


class CommittedBlocksCache(BlockKVCache):
    """The exact cache of block-by-block decoding (block-causal models): the keys/values of the committed blocks only,
    `[0, seq_length)`, which later blocks never change.

    A span forward over the next block (`start == seq_length`) attends to the cached prefix and the span's fresh keys;
    with `appending` set, that forward also appends the span's keys/values: the block is committed. Models need
    nothing beyond the `BlockKVCache` contract (`with_span`) for this.
    """

    def __init__(self) -> None:
        super().__init__()
        self.appending = False

    @classmethod
    def of(cls, cache: BlockKVCache) -> CommittedBlocksCache:
        out = cls()
        out.keys, out.values = list(cache.keys), list(cache.values)
        return out

    def with_span(self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int):
        cached = self.keys[layer].shape[-2] if layer < len(self.keys) else 0
        if start != cached:
            raise ValueError(f"CommittedBlocksCache: a span must start at the cached length {cached}, not {start}.")
        if layer < len(self.keys):
            keys = torch.cat([self.keys[layer], keys], dim=-2)
            values = torch.cat([self.values[layer], values], dim=-2)
        if self.appending:
            if layer < len(self.keys):
                self.keys[layer], self.values[layer] = keys.detach(), values.detach()
            else:
                self.store(layer, keys, values)
        return keys, values

    def select_rows(self, rows: torch.Tensor) -> CommittedBlocksCache:
        return CommittedBlocksCache.of(super().select_rows(rows))

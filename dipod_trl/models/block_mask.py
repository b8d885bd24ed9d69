"""Attention masks of block-diffusion models (SDAR, LLaDA2): causal across blocks, bidirectional inside one.

The model classes never build these: the sampler and the likelihood pass them as (batch, 1, query, key) boolean masks
(True = attend), the form every family's forward uses as given.
"""

from __future__ import annotations

import torch


def block_causal_mask(valid: torch.Tensor, block_length: int, query_start: int = 0, query_end: int | None = None
                      ) -> torch.Tensor:
    """The block-causal mask of queries `[query_start, query_end)` over keys `[0, query_end)`, shape (batch, 1, Q, K).

    `valid` (batch, length) is True on real positions; blocks are columns `[k * block_length, (k + 1) * block_length)`,
    so a row's tokens must be laid out with its blocks on those columns. A query attends to the valid keys of its own
    block and of every earlier block, the mask the published samplers build (`tril` over blocks, repeated
    `block_length` times); a query on an invalid position keeps its own key, so that no attention row is empty (an
    empty row is NaN and would leak through the values).
    """
    query_end = valid.shape[1] if query_end is None else query_end
    queries = torch.arange(query_start, query_end, device=valid.device)
    keys = torch.arange(query_end, device=valid.device)
    earlier_or_same = (keys // block_length)[None, :] <= (queries // block_length)[:, None]
    own = keys[None, :] == queries[:, None]
    return ((earlier_or_same & valid[:, None, :query_end]) | own)[:, None]

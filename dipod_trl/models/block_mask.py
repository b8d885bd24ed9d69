"""Attention masks of block-diffusion models (SDAR, LLaDA2): causal across blocks, bidirectional inside one.

The model classes never build these: the sampler and the likelihood pass them as (batch, 1, query, key) boolean masks
(True = attend), the form every family's forward uses as given. The likelihood's blocks are counted in absolute
positions from each row's first real (non-pad) token, as the published samplers align them, so the prompt's last
partial block continues into the completion; a query always keeps its own key, so that no attention row is empty (an
empty row is NaN in SDPA and would leak through the values).
"""

from __future__ import annotations

import torch

from .protocol import padded_positions


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


def block_ids(attention_mask: torch.Tensor, block_length: int) -> torch.Tensor:
    """The block of each position, (batch, length): its position counted from the row's first real token, divided by
    `block_length`. Pad positions get the block of the real token before them (they are never attended)."""
    if block_length < 1:
        raise ValueError(f"block_length must be a positive number of tokens, got {block_length}.")
    return padded_positions(attention_mask) // block_length


def block_diffusion_training_mask(
    noisy_blocks: torch.Tensor, clean_blocks: torch.Tensor, noisy_keys: torch.Tensor, clean_keys: torch.Tensor
) -> torch.Tensor:
    """The mask of one forward over `[noisy ‖ clean]`, (batch, 1, N + T, N + T), as SDAR trains (the three masks of
    `block_diff_mask` in SDAR's `training/model/SDAR-4B-Chat/modeling_sdar.py`; DARE's RL actors build the same one
    for SDAR and LLaDA2, `build_block_diffusion_mask` in `verl/workers/actor/block_diffusion_utils.py`):

    * a noisy query attends the noisy keys of its own block (block diagonal) and the clean keys of earlier blocks
      (offset block-causal): each noisy block is denoised given the clean blocks before it;
    * a clean query attends the clean keys of its own and earlier blocks (block-causal), never a noisy one.

    `noisy_blocks` (batch, N) and `clean_blocks` (batch, T) are the block ids of the two copies (the noisy copy may be
    a suffix of the sequence: the blocks that hold completion tokens); `noisy_keys` / `clean_keys` mark the positions
    that may be attended at all (real tokens, and in the noisy copy mask tokens shown on the canvas).
    """
    noisy_q, clean_q = noisy_blocks[:, :, None], clean_blocks[:, :, None]
    noisy_to_noisy = (noisy_blocks[:, None, :] == noisy_q) & noisy_keys.bool()[:, None, :]
    noisy_to_clean = (clean_blocks[:, None, :] < noisy_q) & clean_keys.bool()[:, None, :]
    clean_to_clean = (clean_blocks[:, None, :] <= clean_q) & clean_keys.bool()[:, None, :]
    clean_to_noisy = torch.zeros_like(clean_to_clean[:, :, :1]).expand(-1, -1, noisy_blocks.shape[1])
    mask = torch.cat([torch.cat([noisy_to_noisy, noisy_to_clean], dim=2),
                      torch.cat([clean_to_noisy, clean_to_clean], dim=2)], dim=1)
    own = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    return (mask | own).unsqueeze(1)


__all__ = ["block_causal_mask", "block_diffusion_training_mask", "block_ids"]

"""Tiny SDAR, SDAR-MoE and LLaDA2 models built in memory, for tests that need a block-causal model of a given
vocabulary (the hub-layout fixtures with published parity logits are tests/fixtures/{sdar,sdar_moe,llada2}_tiny)."""

from __future__ import annotations

import torch

from dipod_trl.models import (
    LLaDA2MoeConfig,
    LLaDA2MoeModelLM,
    SDARConfig,
    SDARForCausalLM,
    SDARMoeConfig,
    SDARMoeForCausalLM,
)

_SIZES = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, max_position_embeddings=256, initializer_range=0.1)
_EXPERTS = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16)


def make_tiny_block_model(family: str, vocab_size: int = 64, seed: int = 0, **overrides) -> torch.nn.Module:
    """A random `family` model ("sdar", "sdar_moe" or "llada2"), 2 layers of width 64, with the mask token the last id
    of the vocabulary and EOS the one before it; `overrides` are config keys."""
    ids = dict(vocab_size=vocab_size, mask_token_id=vocab_size - 1, eos_token_id=vocab_size - 2,
               pad_token_id=vocab_size - 2, bos_token_id=None)
    torch.manual_seed(seed)
    if family == "sdar":
        return SDARForCausalLM(SDARConfig(**{**_SIZES, **ids, **overrides}))
    if family == "sdar_moe":
        return SDARMoeForCausalLM(SDARMoeConfig(**{**_SIZES, **_EXPERTS, **ids, **overrides}))
    if family == "llada2":
        config = LLaDA2MoeConfig(**{**_SIZES, **_EXPERTS, "n_group": 4, "topk_group": 2, "num_shared_experts": 1,
                                    "first_k_dense_replace": 1, **ids, **overrides})
        return LLaDA2MoeModelLM(config)
    raise ValueError(f"family={family!r}: one of 'sdar', 'sdar_moe', 'llada2'.")

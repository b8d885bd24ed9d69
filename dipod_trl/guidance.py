"""Model logits with classifier-free guidance, as LLaDA's reference code computes them; used by the sampler and by
the likelihood estimators alike."""

from __future__ import annotations

import torch

from .models import DiffusionLM


def model_logits(
    lm: DiffusionLM,
    x: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_index: torch.Tensor,
    cfg_scale: float,
) -> torch.Tensor:
    """Logits, with classifier-free guidance when `cfg_scale > 0` (the unconditional pass sees the prompt masked)."""
    if cfg_scale <= 0:
        return lm.logits(x, attention_mask)
    unconditional = x.masked_fill(prompt_index, lm.mask_token_id)
    both = lm.logits(torch.cat([x, unconditional]), torch.cat([attention_mask, attention_mask]))
    cond, uncond = both.chunk(2, dim=0)
    return uncond + (cfg_scale + 1) * (cond - uncond)

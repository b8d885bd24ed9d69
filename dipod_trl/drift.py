"""The drift monitor's statistics: how far the ELBO surrogate sits below the likelihood it stands for.

From `K` random generation orders per completion, the mean of the order log-likelihoods estimates the ELBO and their
log-mean-exp is the importance-weighted order bound; their gap (non-negative for every completion) is the paper's
"double drift" that DiPOD keeps small.
"""

from __future__ import annotations

import torch

from .likelihood import log_mean_exp, order_log_likelihoods

DRIFT_STATISTICS = ("elbo", "order_bound", "gap", "gap_per_token")


def drift_statistics(model, prompt_ids, prompt_mask, completion_ids, completion_mask, orders: torch.Tensor, *,
                     chunk_size: int | None = None, block_length: int | None = None) -> torch.Tensor:
    """Batch means of [`DRIFT_STATISTICS`] for the completions, along `orders` (B, K, C). Shape (4,)."""
    log_likelihoods = order_log_likelihoods(
        model,
        prompt_ids,
        completion_ids,
        orders,
        completion_mask=completion_mask,
        attention_mask=prompt_mask,
        chunk_size=chunk_size,
        block_length=block_length,
    )
    elbo = log_likelihoods.mean(dim=1)
    bound = log_mean_exp(log_likelihoods)
    lengths = completion_mask.sum(-1).float()
    return torch.stack([elbo.mean(), bound.mean(), (bound - elbo).mean(), ((bound - elbo) / lengths).mean()])

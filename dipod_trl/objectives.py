"""Policy-gradient surrogates for diffusion policies and DiPOD's self-distillation term, as pure functions.

Nothing here knows about the trainer: each function takes likelihood estimates and advantages and returns a loss and
the statistics worth logging, so that tests can check every formula against an independent computation.

Shapes: `B` completions in the batch, `C` completion positions. "ELBO" below is a completion's summed ELBO in nats
(one value per sequence); `lengths` are completion lengths in tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from trl.trainer.utils import nanstd


@dataclass
class ObjectiveOutput:
    """A surrogate loss (to minimise) and detached statistics for logging."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def group_relative_advantages(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    num_generations: int,
    *,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages, as TRL's GRPOTrainer and d1 compute them. Returns `(advantages, rewards)`.

    `rewards_per_func` is (N, F): N completions, consecutive groups of `num_generations` share a prompt; NaN marks a
    reward a function did not give. `sum_then_normalize`: weighted sum, minus the group mean, divided by the group
    (or batch) standard deviation + 1e-4 unless `scale_rewards='none'`. `normalize_then_sum`: normalise each function
    within its group first. A completion that no function scored gets advantage 0.
    """
    if rewards_per_func.shape[0] % num_generations != 0:
        raise ValueError(
            f"{rewards_per_func.shape[0]} completions do not split into groups of num_generations={num_generations}."
        )
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    weights = reward_weights.to(rewards_per_func.device).unsqueeze(0)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        grouped = rewards.view(-1, num_generations)
        mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
        advantages = rewards - mean
        if scale_rewards == "batch":
            std = nanstd(rewards) if rewards.numel() > 1 else rewards.new_zeros(())
            advantages = advantages / (std + 1e-4)
        elif scale_rewards == "group":
            std = nanstd(grouped, dim=1).repeat_interleave(num_generations) if num_generations > 1 else 0.0
            advantages = advantages / (std + 1e-4)
        elif scale_rewards != "none":
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}.")
    elif aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
        mean = torch.nanmean(grouped, dim=1, keepdim=True)
        std = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean)
        normalized = ((grouped - mean) / (std + 1e-4)).view_as(rewards_per_func)
        summed = (normalized * weights).nansum(dim=1)
        summed[unscorable] = torch.nan
        batch_std = nanstd(summed).expand_as(summed) if summed.numel() > 1 else torch.zeros_like(summed)
        advantages = (summed - torch.nanmean(summed)) / (batch_std + 1e-4)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
    else:
        raise ValueError(
            f"multi_objective_aggregation must be 'sum_then_normalize' or 'normalize_then_sum', got {aggregation!r}."
        )
    return torch.nan_to_num(advantages, nan=0.0), rewards


def _clip_stats(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float):
    low = (ratio < 1 - eps_low) & (advantages < 0)
    high = (ratio > 1 + eps_high) & (advantages > 0)
    return low, high


def fpo_loss(
    elbo: torch.Tensor,
    old_elbo: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    ref_elbo: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    lengths: torch.Tensor | None = None,
    kl_estimator: str = "k3",
) -> ObjectiveOutput:
    """FPO for masked diffusion: PPO clipping on the sequence ratio `exp(ELBO_theta - ELBO_old)`, mean over sequences.

    Old and current ELBOs must be estimated on the same masks, so the ratio is exactly 1 before any update. With
    `kl_beta > 0`, adds `kl_beta` times a KL estimate per sequence, averaged over sequences: `kl_estimator='k3'`:
    `exp(d) - d - 1` on the per-token ELBO difference `d = (ELBO_ref - ELBO_theta) / length`;
    `'linear_sequence'`: `ELBO_theta - ELBO_ref` in nats per sequence (the paper's release, FPO branch of its
    `diffu_grpo_trainer.py`: `beta * (current_elbos - ref_elbos).mean()`).
    """
    log_ratio = elbo - old_elbo
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_sequence = -torch.min(ratio * advantages, clipped * advantages)
    metrics = {"policy_loss": per_sequence.mean().detach()}
    if kl_beta != 0.0:
        if ref_elbo is None or lengths is None:
            raise ValueError("fpo_loss with kl_beta != 0 needs ref_elbo and lengths.")
        if kl_estimator == "k3":
            d = (ref_elbo - elbo) / lengths.clamp(min=1)
            kl = torch.exp(d) - d - 1
        elif kl_estimator == "linear_sequence":
            kl = elbo - ref_elbo
        else:
            raise ValueError(f"kl_estimator must be 'k3' or 'linear_sequence', got {kl_estimator!r}.")
        per_sequence = per_sequence + kl_beta * kl
        metrics["kl"] = kl.mean().detach()
    low, high = _clip_stats(ratio, advantages, epsilon_low, epsilon_high)
    metrics.update(
        {
            "clip_ratio/low_mean": low.float().mean(),
            "clip_ratio/high_mean": high.float().mean(),
            "clip_ratio/region_mean": (low | high).float().mean(),
            "ratio/mean": ratio.detach().mean(),
        }
    )
    return ObjectiveOutput(per_sequence.mean(), metrics)


def diffu_grpo_loss(
    token_logps: torch.Tensor,
    old_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    ref_token_logps: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    num_tokens: torch.Tensor | float | None = None,
) -> ObjectiveOutput:
    """d1's diffu-GRPO: per-token clipped ratio on one-step log-probabilities, plus `kl_beta` times the per-token k3
    KL to the reference, averaged over all completion tokens of the batch (d1's normalisation).

    `num_tokens` is what the token sums are divided by (default: this batch's completion tokens); a trainer passes
    its share of the whole global batch's tokens, so that processes and micro-batches average exactly.
    """
    mask = completion_mask.to(token_logps.dtype)
    ratio = torch.exp(token_logps - old_token_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    num_tokens = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
    metrics = {"policy_loss": ((per_token * mask).sum() / num_tokens).detach()}
    if kl_beta != 0.0:
        if ref_token_logps is None:
            raise ValueError("diffu_grpo_loss with kl_beta != 0 needs ref_token_logps.")
        d = ref_token_logps - token_logps
        kl = torch.exp(d) - d - 1
        per_token = per_token + kl_beta * kl
        metrics["kl"] = ((kl * mask).sum() / num_tokens).detach()
    low, high = _clip_stats(ratio, adv, epsilon_low, epsilon_high)
    metrics.update(
        {
            "clip_ratio/low_mean": (low.float() * mask).sum() / num_tokens,
            "clip_ratio/high_mean": (high.float() * mask).sum() / num_tokens,
            "clip_ratio/region_mean": ((low | high).float() * mask).sum() / num_tokens,
            "ratio/mean": ((ratio.detach() * mask).sum() / num_tokens),
        }
    )
    return ObjectiveOutput((per_token * mask).sum() / num_tokens, metrics)


def spg_eubo_per_token(
    token_logps: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor, eubo_beta: float
) -> torch.Tensor:
    """SPG's evidence upper bound per token, one value per sequence.

    For each token, `mean_k weight_k * 1[masked in k] * p_k^beta` estimates the mask-ratio-weighted average of
    `p(y_i | context)^beta` (`weight_k = L / l_k` undoes the chance of being masked); its log divided by `beta`,
    averaged over the tokens that at least one sample masked, is SPG's (mean-field) upper bound.

    `token_logps`, `masks`: (B, K, C) as returned by `dipod_trl.likelihood.masked_token_logps` and its draw;
    `weights`: (B, K).

    Computed in log space (`logsumexp` of `beta * log p + log weight`): `p^beta` of a confidently wrong token
    underflows float32 (below ~1e-45, e.g. log p = -70 at beta = 1.5), and its log would be -inf.
    """
    scored = masks.any(dim=1)
    log_terms = eubo_beta * token_logps + torch.log(weights).unsqueeze(-1)
    log_terms = log_terms.masked_fill(~masks.bool(), float("-inf"))
    log_terms = log_terms.masked_fill(~scored.unsqueeze(1), 0.0)  # no all -inf column: its gradient would be NaN
    log_average = torch.logsumexp(log_terms, dim=1) - math.log(token_logps.shape[1])  # (B, C)
    log_average = torch.where(scored, log_average, torch.zeros_like(log_average)) / eubo_beta
    return (log_average * scored).sum(-1) / scored.sum(-1).clamp(min=1)


def spg_loss(
    elbo_per_token: torch.Tensor,
    negative_bound_per_token: torch.Tensor,
    advantages: torch.Tensor,
    lengths: torch.Tensor,
    num_tokens: torch.Tensor | float | None = None,
) -> ObjectiveOutput:
    """SPG's sandwiched policy gradient: maximise the ELBO of completions with positive advantage and minimise an
    upper bound on the likelihood of those with negative advantage; the per-token bounds are averaged with
    completion-length weights: `-sum_j L_j A_j s_j / sum_j L_j` (`num_tokens` replaces `sum_j L_j`, as in
    `diffu_grpo_loss`)."""
    lengths = lengths.to(elbo_per_token.dtype)
    score = torch.where(advantages > 0, elbo_per_token, negative_bound_per_token)
    num_tokens = lengths.sum().clamp(min=1) if num_tokens is None else num_tokens
    loss = -(lengths * advantages * score).sum() / num_tokens
    metrics = {
        "policy_loss": loss.detach(),
        "spg/negative_bound_mean": negative_bound_per_token.detach().mean(),
    }
    return ObjectiveOutput(loss, metrics)


def dipod_term(
    elbo: torch.Tensor, lengths: torch.Tensor, normalization: str, num_tokens: torch.Tensor | float | None = None
) -> torch.Tensor:
    """DiPOD's on-policy ELBO term, to be subtracted from the loss with weight `dipod_beta`.

    `elbo` holds each on-policy completion's summed ELBO (or, for diffu-GRPO, its summed one-step token
    log-likelihood). `'sequence'`: the batch mean (nats per sequence). `'token'`: summed ELBOs over summed lengths
    (nats per token, each completion weighted by its length; `num_tokens` replaces the summed lengths, as in
    `diffu_grpo_loss`).
    """
    if normalization == "sequence":
        return elbo.mean()
    if normalization == "token":
        return elbo.sum() / (lengths.to(elbo.dtype).sum().clamp(min=1) if num_tokens is None else num_tokens)
    raise ValueError(f"dipod_normalization must be 'sequence' or 'token', got {normalization!r}.")

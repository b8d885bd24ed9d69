"""SPG's sandwiched policy gradient: the ELBO for positive advantages, an upper bound (EUBO) for negative ones."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..masks import TOKEN_WEIGHTED_ESTIMATORS, MaskDraw
from .base import LossInputs, Objective, ObjectiveOutput

NEGATIVE_BOUNDS = ("eubo", "mix")


def spg_eubo_per_token(
    token_logps: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor, eubo_beta: float
) -> torch.Tensor:
    """SPG's evidence upper bound per token, one value per sequence.

    For each token, `mean_k weight_k * 1[masked in k] * p_k^beta` estimates the mask-ratio-weighted average of
    `p(y_i | context)^beta` (`weight_k = L / l_k` undoes the chance of being masked); its log divided by `beta`,
    averaged over the tokens that at least one sample masked, is SPG's (mean-field) upper bound.

    `token_logps`, `masks`: (B, K, C) as returned by `dipod_trl.likelihood.masked_token_logps` and its draw;
    `weights`: (B, K), or (B, K, C) per token (a block-causal draw: `L_k / l_k` of the token's block).

    Computed in log space (`logsumexp` of `beta * log p + log weight`): `p^beta` of a confidently wrong token
    underflows float32 (below ~1e-45, e.g. log p = -70 at beta = 1.5), and its log would be -inf.
    """
    scored = masks.any(dim=1)
    log_weights = torch.log(weights) if weights.dim() == 3 else torch.log(weights).unsqueeze(-1)
    log_terms = eubo_beta * token_logps + log_weights
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


class SPG(Objective):
    """`objective='spg'`: [`spg_loss`] on per-token ELBOs and EUBOs (or their mixture); on-policy, so no ratio and no
    reference; DiPOD's term in nats per token."""

    name = "spg"
    default_dipod_normalization = "token"
    scores_old_policy = False

    @classmethod
    def check_options(cls, args) -> None:
        if args.spg_negative_bound not in NEGATIVE_BOUNDS:
            raise ValueError(f"spg_negative_bound must be one of {NEGATIVE_BOUNDS}, got {args.spg_negative_bound!r}.")
        if args.spg_eubo_beta < 1.0:
            raise ValueError(
                f"spg_eubo_beta must be >= 1 for the EUBO to bound the likelihood, got {args.spg_eubo_beta}."
            )
        if not 0.0 <= args.spg_mix_weight <= 1.0:
            raise ValueError(f"spg_mix_weight must be in [0, 1], got {args.spg_mix_weight}.")

    @classmethod
    def configure(cls, args) -> None:
        if args.elbo_estimator in TOKEN_WEIGHTED_ESTIMATORS:
            raise ValueError(f"elbo_estimator={args.elbo_estimator!r} weighs each token separately; SPG's EUBO needs "
                             "one weight per sample. Use 'block_random', 'antithetic', 'quadrature', 'stratified' or "
                             "'mc' with objective='spg'.")
        super().configure(args)

    def loss(self, token_logps: torch.Tensor, draw: MaskDraw, inputs: LossInputs) -> ObjectiveOutput:
        elbo = self.reduce(token_logps, draw)
        lengths = inputs.lengths
        per_token = elbo / lengths.clamp(min=1)
        negative = spg_eubo_per_token(token_logps, draw.completion_masks, draw.weights, self.args.spg_eubo_beta)
        if self.args.spg_negative_bound == "mix":
            weight = self.args.spg_mix_weight
            negative = weight * negative + (1 - weight) * per_token
        out = spg_loss(per_token, negative, inputs.advantages, lengths, num_tokens=inputs.num_tokens)
        return replace(out, on_policy=elbo)

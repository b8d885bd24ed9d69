"""FPO for masked diffusion: PPO clipping on the sequence ratio of ELBOs estimated on shared masks."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..masks import MaskDraw
from .base import LossInputs, Objective, ObjectiveOutput, clip_stats


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
    low, high = clip_stats(ratio, advantages, epsilon_low, epsilon_high)
    metrics.update(
        {
            "clip_ratio/low_mean": low.float().mean(),
            "clip_ratio/high_mean": high.float().mean(),
            "clip_ratio/region_mean": (low | high).float().mean(),
            "ratio/mean": ratio.detach().mean(),
        }
    )
    return ObjectiveOutput(per_sequence.mean(), metrics)


class FPO(Objective):
    """`objective='fpo'`: [`fpo_loss`] on each completion's ELBO; DiPOD's term in nats per sequence."""

    name = "fpo"
    default_dipod_normalization = "sequence"
    kl_estimators = ("k3", "linear_sequence")
    kl_description = "k3 on per-token ELBO differences, or linear_sequence"

    @classmethod
    def check_options(cls, args) -> None:
        known = ("k3", "linear_sequence", "k2")  # k2: espo and gdpo only, checked when they run
        if args.kl_estimator not in known:
            raise ValueError(f"kl_estimator must be one of {known}, got {args.kl_estimator!r}.")

    def loss(self, token_logps: torch.Tensor, draw: MaskDraw, inputs: LossInputs) -> ObjectiveOutput:
        elbo = self.reduce(token_logps, draw)
        old = inputs.old_scores if inputs.old_scores is not None else elbo.detach()
        out = fpo_loss(elbo, old, inputs.advantages, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                       ref_elbo=inputs.ref_scores, kl_beta=self.kl_beta, lengths=inputs.lengths,
                       kl_estimator=self.args.kl_estimator)
        return replace(out, on_policy=elbo)

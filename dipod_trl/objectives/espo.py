"""ESPO and a GDPO-style objective: PPO clipping on a sequence-level ELBO ratio normalised per token.

ESPO (ELBO-based Sequence-level Policy Optimization; ML-GSAI/ESPO, `espo/espo_trainer.py`, `compute_loss`): the whole
completion is one action, its likelihood the ELBO, and the importance ratio `exp((ELBO_theta - ELBO_old) / C)` is
normalised by the completion canvas length `C` (the release's `logits_to_keep`, here `max_completion_length`), so
that it stays near 1 for long completions. Its KL to the reference is the release's `k2` on sequence ELBOs,
`(ELBO_theta - ELBO_ref)^2 / 2`, summed and divided by `sequences x C`.

GDPO-style (Group Diffusion Policy Optimization): the same sequence-level clipped ratio, normalised by each
completion's own length, on the `quadrature` ELBO estimate (the paper's semi-deterministic estimate: deterministic
nodes in time, random masks at each). No public code of it could be read; this follows the paper's description.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..masks import MaskDraw
from .base import LossInputs, Objective, ObjectiveOutput, clip_stats


def sequence_ratio_loss(
    elbo: torch.Tensor,
    old_elbo: torch.Tensor,
    advantages: torch.Tensor,
    normalizer: torch.Tensor | float,
    *,
    epsilon_low: float,
    epsilon_high: float,
    ref_elbo: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    kl_estimator: str = "k2",
) -> ObjectiveOutput:
    """`-mean_b min(r_b A_b, clip(r_b) A_b)` with `r_b = exp((ELBO_b - ELBO_old_b) / n_b)`, `n` = `normalizer`
    (a number or one per sequence); with `kl_beta`, plus `kl_beta` times the KL estimate: `'k2'` (ESPO's release):
    `sum_b (ELBO_b - ELBO_ref_b)^2 / 2 / sum_b n_b`; `'k3'`: the mean of `exp(d) - d - 1`, `d = (ELBO_ref -
    ELBO) / n`."""
    normalizer = torch.as_tensor(normalizer, dtype=elbo.dtype, device=elbo.device).expand_as(elbo).clamp(min=1)
    ratio = torch.exp((elbo - old_elbo) / normalizer)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages).mean()
    metrics = {"policy_loss": loss.detach()}
    if kl_beta != 0.0:
        if ref_elbo is None:
            raise ValueError("sequence_ratio_loss with kl_beta != 0 needs ref_elbo.")
        if kl_estimator == "k2":
            kl = ((elbo - ref_elbo) ** 2 / 2).sum() / normalizer.sum()
        elif kl_estimator == "k3":
            d = (ref_elbo - elbo) / normalizer
            kl = (torch.exp(d) - d - 1).mean()
        else:
            raise ValueError(f"kl_estimator must be 'k2' or 'k3', got {kl_estimator!r}.")
        loss = loss + kl_beta * kl
        metrics["kl"] = kl.detach()
    low, high = clip_stats(ratio, advantages, epsilon_low, epsilon_high)
    metrics.update({"clip_ratio/low_mean": low.float().mean(), "clip_ratio/high_mean": high.float().mean(),
                    "clip_ratio/region_mean": (low | high).float().mean(), "ratio/mean": ratio.detach().mean()})
    return ObjectiveOutput(loss, metrics)


class ESPO(Objective):
    """`objective='espo'`: [`sequence_ratio_loss`] normalised by the canvas length `max_completion_length`;
    DiPOD's term in nats per token."""

    name = "espo"
    default_dipod_normalization = "token"
    kl_estimators = ("k2", "k3")
    kl_description = "k2 on sequence ELBOs (the release's) or k3 on per-token ELBO differences"

    def normalizer(self, inputs: LossInputs) -> torch.Tensor | float:
        return float(self.args.max_completion_length)

    def loss(self, token_logps: torch.Tensor, draw: MaskDraw, inputs: LossInputs) -> ObjectiveOutput:
        elbo = self.reduce(token_logps, draw)
        old = inputs.old_scores if inputs.old_scores is not None else elbo.detach()
        out = sequence_ratio_loss(elbo, old, inputs.advantages, self.normalizer(inputs),
                                  epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                                  ref_elbo=inputs.ref_scores, kl_beta=self.kl_beta,
                                  kl_estimator=self.args.kl_estimator)
        return replace(out, on_policy=elbo)


class GDPO(ESPO):
    """`objective='gdpo'`: [`sequence_ratio_loss`] normalised by each completion's length, on the `quadrature`
    estimate (`elbo_estimator='quadrature'` is required)."""

    name = "gdpo"

    @classmethod
    def configure(cls, args) -> None:
        if args.elbo_estimator != "quadrature":
            raise ValueError(f"objective='gdpo' estimates the ELBO with the quadrature estimator: set "
                             f"elbo_estimator='quadrature' (got {args.elbo_estimator!r}), or use objective='espo'.")
        super().configure(args)

    def normalizer(self, inputs: LossInputs) -> torch.Tensor | float:
        return inputs.lengths

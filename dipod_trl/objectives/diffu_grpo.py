"""d1's diffu-GRPO: a per-token clipped ratio on one-step log-probabilities (the completion fully masked)."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..masks import MaskDraw
from ..randomness import Generators
from .base import LossInputs, Objective, ObjectiveOutput, clip_stats

ONE_STEP_MASKS = ("canvas", "completion")


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
    low, high = clip_stats(ratio, adv, epsilon_low, epsilon_high)
    metrics.update(
        {
            "clip_ratio/low_mean": (low.float() * mask).sum() / num_tokens,
            "clip_ratio/high_mean": (high.float() * mask).sum() / num_tokens,
            "clip_ratio/region_mean": ((low | high).float() * mask).sum() / num_tokens,
            "ratio/mean": ((ratio.detach() * mask).sum() / num_tokens),
        }
    )
    return ObjectiveOutput((per_token * mask).sum() / num_tokens, metrics)


class DiffuGRPO(Objective):
    """`objective='diffu_grpo'`: [`diffu_grpo_loss`] on d1's one-step estimate, with d1's prompt masking (0.15) and
    d1's per-token k3 KL; DiPOD's term is the mean one-step token log-likelihood (nats per token)."""

    name = "diffu_grpo"
    default_dipod_normalization = "token"
    default_p_mask_prompt = 0.15
    kl_description = "d1's per-token k3 KL"

    @classmethod
    def check_options(cls, args) -> None:
        if args.one_step_masks not in ONE_STEP_MASKS:
            raise ValueError(f"one_step_masks must be one of {ONE_STEP_MASKS}, got {args.one_step_masks!r}.")

    @classmethod
    def draws_elbo_samples(cls) -> bool:
        return False  # one one-step sample per completion, whatever elbo_num_samples says

    def draw(self, completion_mask: torch.Tensor, prompt_mask: torch.Tensor, generator: Generators) -> MaskDraw:
        return self._draw(completion_mask, prompt_mask, generator, 1, "one_step", mask_padding=self.scores_on_canvas())

    def scores_on_canvas(self) -> bool:
        return self.args.one_step_masks == "canvas"

    def reduce(self, token_logps: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
        return token_logps[:, 0]

    def loss(self, token_logps: torch.Tensor, draw: MaskDraw, inputs: LossInputs) -> ObjectiveOutput:
        token = self.reduce(token_logps, draw)
        old = inputs.old_scores if inputs.old_scores is not None else token.detach()
        out = diffu_grpo_loss(token, old, inputs.advantages, inputs.completion_mask, epsilon_low=self.epsilon_low,
                              epsilon_high=self.epsilon_high, ref_token_logps=inputs.ref_scores,
                              kl_beta=self.kl_beta, num_tokens=inputs.num_tokens)
        return replace(out, on_policy=token.sum(dim=-1))

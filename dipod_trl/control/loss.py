"""The loss of one minibatch of the control trainer, and the (t, eps) draws its CFM terms are evaluated on."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .config import FlowPolicyConfig
from .objectives import dipod_loss, fpo_loss, fpo_plus_plus_loss, value_loss
from .policy import Critic, ObservationNormalizedPolicy


class LossOutput(NamedTuple):
    loss: torch.Tensor  # what the optimizer minimises
    pg_loss: torch.Tensor
    dipod_loss: torch.Tensor  # the on-policy CFM loss (logged even when dipod_beta = 0)
    value_loss: torch.Tensor
    ratio: torch.Tensor  # the (clamped) ratios the policy loss used
    cfm_new: torch.Tensor  # current per-draw CFM losses (B, N)


def minibatch_loss(
    policy: ObservationNormalizedPolicy, critic: Critic, batch: dict, config: FlowPolicyConfig
) -> LossOutput:
    """The loss of one minibatch: policy loss + dipod_beta * DiPOD term + vf_coef * value loss.

    `batch` holds normalised `obs` (B, obs_dim), `actions` (B, A), the rollout's draws `cfm_t` (B, N, 1) and `cfm_eps`
    (B, N, A), the rollout policy's per-draw losses `cfm_old` (B, N), `advantages` (B,) and `returns` (B,). For
    `ppo` the "per-draw losses" are the Gaussian's exact -log pi (B, 1), so FPO's ratio is PPO's ratio.
    """
    cfm_new = policy.surrogate_nll(batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
    if config.loss_type in ("fpo", "ppo"):
        pg = fpo_loss(batch["cfm_old"], cfm_new, batch["advantages"], config.clip_coef, config.trust_region_mode)
    else:
        pg = fpo_plus_plus_loss(
            batch["cfm_old"],
            cfm_new,
            batch["advantages"],
            config.clip_coef,
            config.trust_region_mode,
            log_ratio_clamp=config.log_ratio_clamp,
            neg_adv_cfm_clamp=config.neg_adv_cfm_clamp,
            cfm_loss_clamp=config.cfm_loss_clamp,
        )
    on_policy_cfm = dipod_loss(cfm_new)
    v_loss = value_loss(critic(batch["obs"]), batch["returns"])
    loss = pg.loss + config.vf_coef * v_loss
    if config.dipod_beta:  # skipped at 0, so beta = 0 is the base objective bit for bit
        loss = loss + config.dipod_beta * on_policy_cfm
    return LossOutput(loss, pg.loss, on_policy_cfm, v_loss, pg.ratio, cfm_new)


def draw_cfm_samples(
    batch_shape, num_samples: int, action_dim: int, generator: torch.Generator, time_margin: float = 0.005
):
    """N (t, eps) draws per action: t ~ U(margin, 1 - margin) of shape (*batch, N, 1), eps ~ N(0, I) (*batch, N, A).

    The margin keeps t away from the ends of the path, where the regression target is least stable (the release draws
    t from [0.005, 0.995]).
    """
    t = time_margin + (1.0 - 2.0 * time_margin) * torch.rand((*batch_shape, num_samples, 1), generator=generator)
    eps = torch.randn((*batch_shape, num_samples, action_dim), generator=generator)
    return t, eps

"""The math of the control trainer as pure functions of tensors: CFM loss, FPO / FPO++ policy losses, DiPOD term, GAE.

Flow convention (the one the tests and the policy use): t=0 is noise, t=1 is the action.

    x_t = t * a + (1 - t) * eps,   eps ~ N(0, I),  t ~ U(0, 1)
    target velocity v* = a - eps
    L_cfm(o, a; t, eps) = sum over action dims of (v_theta(o, x_t, t) - v*)^2 / sqrt(A)

(`reduction="sqrt"`, the release's default: variance-preserving across action sizes; "mean" and "sum" as options.)

The negative CFM loss is (up to constants and weighting) an ELBO of log pi(a | o), so `L_old - L_new` stands in for
the log-likelihood ratio of PPO. The (t, eps) draws are made once at rollout time and shared by old and new policy,
so the ratio is exactly 1 before the first gradient step.

Shapes: `cfm_old` / `cfm_new` are (B, N) per-draw CFM losses for B actions and N draws; `advantages` is (B,).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def cfm_path(action: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy action x_t and target velocity a - eps for actions (B, A), noise (B, N, A) and times (B, N, 1)."""
    action = action.unsqueeze(-2)
    return t * action + (1.0 - t) * eps, action - eps


CFM_REDUCTIONS = ("sqrt", "mean", "sum")


def cfm_loss(velocity: torch.Tensor, target: torch.Tensor, reduction: str = "sqrt") -> torch.Tensor:
    """Per-draw CFM loss: squared error of the predicted velocity over action dims. (B, N, A) -> (B, N).

    `sqrt` divides the sum by sqrt(A), as FPO++'s control code does by default (the same gradient scale for robots
    with few or many joints); `mean` divides by A, `sum` does not divide.
    """
    squared = (velocity - target).pow(2)
    if reduction == "sqrt":
        return squared.sum(dim=-1) / squared.shape[-1] ** 0.5
    if reduction == "mean":
        return squared.mean(dim=-1)
    if reduction == "sum":
        return squared.sum(dim=-1)
    raise ValueError(f"cfm_loss_reduction={reduction!r}: must be one of {CFM_REDUCTIONS}")


def straight_through_clamp(x: torch.Tensor, max: float) -> torch.Tensor:
    """`x.clamp(max=max)` in the forward pass, identity gradient in the backward pass (FPO++'s log-ratio clamp)."""
    return x + (x.clamp(max=max) - x).detach()


def trust_region_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float, mode: str) -> torch.Tensor:
    """Elementwise surrogate loss (to minimise) of a ratio and advantages broadcast to the ratio's shape.

    ppo:  max(-A r, -A clip(r, 1 - e, 1 + e))                 (PPO's pessimistic clipped objective)
    spo:  -(A r - |A| (r - 1)^2 / (2 e))                      (Simple Policy Optimization's quadratic penalty)
    aspo: ppo where A > 0, spo where A <= 0                   (FPO++: clip gains, penalise pushing bad actions down)
    """
    ppo = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef))
    if mode == "ppo":
        return ppo
    spo = -(advantages * ratio - advantages.abs() * (ratio - 1.0).pow(2) / (2.0 * clip_coef))
    if mode == "spo":
        return spo
    if mode == "aspo":
        return torch.where(advantages > 0, ppo, spo)
    raise ValueError(f"trust_region_mode={mode!r}: must be 'ppo', 'spo' or 'aspo'")


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar to minimise
    ratio: torch.Tensor  # ratios the loss used: (B,) for fpo, (B, N) for fpo++
    log_ratio: torch.Tensor  # their logs, same shape


def fpo_loss(
    cfm_old: torch.Tensor,
    cfm_new: torch.Tensor,
    advantages: torch.Tensor,
    clip_coef: float,
    trust_region_mode: str = "ppo",
) -> PolicyLoss:
    """FPO (McAllister et al. 2025): one ratio per action, the CFM losses averaged over the N draws before the exp."""
    log_ratio = cfm_old.mean(dim=-1) - cfm_new.mean(dim=-1)
    ratio = log_ratio.exp()
    loss = trust_region_loss(ratio, advantages, clip_coef, trust_region_mode).mean()
    return PolicyLoss(loss, ratio, log_ratio)


def fpo_plus_plus_loss(
    cfm_old: torch.Tensor,
    cfm_new: torch.Tensor,
    advantages: torch.Tensor,
    clip_coef: float,
    trust_region_mode: str = "aspo",
    log_ratio_clamp: float = 10.0,
    neg_adv_cfm_clamp: float = 20.0,
    cfm_loss_clamp: float = 20.0,
) -> PolicyLoss:
    """FPO++: one ratio per (t, eps) draw, averaged after the trust region.

    In order, as FPO++'s control code:
    1. old and current per-draw CFM losses are clamped at `cfm_loss_clamp` (0 disables), so an outlier draw (a large
       eps at small t) is frozen at ratio 1 instead of dominating the batch;
    2. for negative advantages the current CFM loss is clamped at `neg_adv_cfm_clamp`: past it, pushing the
       likelihood of a bad action further down earns nothing (zero gradient), which stops the loss from running away;
    3. the log-ratio is clamped from above at `log_ratio_clamp` with a straight-through estimator, so exp() cannot
       overflow while the draw's gradient still flows.
    """
    adv = advantages.unsqueeze(-1)
    if cfm_loss_clamp > 0:
        cfm_old, cfm_new = cfm_old.clamp(max=cfm_loss_clamp), cfm_new.clamp(max=cfm_loss_clamp)
    cfm_new = torch.where(adv < 0, cfm_new.clamp(max=neg_adv_cfm_clamp), cfm_new)
    log_ratio = straight_through_clamp(cfm_old - cfm_new, max=log_ratio_clamp)
    ratio = log_ratio.exp()
    loss = trust_region_loss(ratio, adv.expand_as(ratio), clip_coef, trust_region_mode).mean()
    return PolicyLoss(loss, ratio, log_ratio)


def dipod_loss(cfm_new: torch.Tensor) -> torch.Tensor:
    """DiPOD term for flow policies: the current policy's mean CFM loss on its own on-policy actions.

    Minimising it maximises the ELBO of the sampled actions (the flow analogue of DiPOD's on-policy ELBO term); it is
    added to the policy loss with weight `dipod_beta`. It reuses the rollout's (t, eps) draws: no extra forward pass.
    """
    return cfm_new.mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    return 0.5 * (values - returns).pow(2).mean()


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (T, num_envs) rollout; returns (advantages, returns).

    `next_values[t]` is V of the observation after step t: of the final observation when the episode ended there, so a
    truncated (time-limit) episode is bootstrapped correctly. `terminations` zero the bootstrap; `dones`
    (terminated or truncated) stop the advantage from leaking into the next episode.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for step in reversed(range(rewards.shape[0])):
        delta = rewards[step] + gamma * (1.0 - terminations[step]) * next_values[step] - values[step]
        running = delta + gamma * gae_lambda * (1.0 - dones[step]) * running
        advantages[step] = running
    return advantages, advantages + values

"""Group-relative advantages from per-function rewards, as TRL's GRPOTrainer and d1 compute them."""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd


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

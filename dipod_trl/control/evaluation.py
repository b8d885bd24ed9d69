"""Deterministic evaluation of a control policy: seeded episodes, seeded (or zero) flow noise."""

from __future__ import annotations

import numpy as np
import torch

from .envs import make_envs
from .policy import ObservationNormalizedPolicy


@torch.no_grad()
def evaluate(
    policy: ObservationNormalizedPolicy,
    env_id: str | None = None,
    num_episodes: int = 10,
    seed: int = 12345,
    noise: str = "seeded",
) -> np.ndarray:
    """Undiscounted returns of `num_episodes` episodes (one per parallel env), deterministic given the seed.

    The episodes are seeded with `seed`, the observation statistics are the policy's (frozen here), and the initial
    flow noise is zero (`noise="zero"`) or drawn from a generator seeded with `seed` (`noise="seeded"`): evaluating
    the same policy twice gives the same returns.
    """
    if noise not in ("zero", "seeded"):
        raise ValueError(f"noise={noise!r}: must be 'zero' or 'seeded'")
    env_id = env_id or policy.config["env_id"]
    envs = make_envs(env_id, num_episodes)
    generator = torch.Generator().manual_seed(seed)
    obs, _ = envs.reset(seed=seed)
    returns, finished = np.zeros(num_episodes), np.zeros(num_episodes, dtype=bool)
    while not finished.all():
        if noise == "seeded":
            action_noise = torch.randn((num_episodes, policy.action_dim), generator=generator)
        else:
            action_noise = torch.zeros((num_episodes, policy.action_dim))
        obs, reward, terminated, truncated, _ = envs.step(policy.act(obs, noise=action_noise))
        returns += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
    envs.close()
    return returns

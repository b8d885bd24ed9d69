"""Vectorised gymnasium envs for flow policies: Box actions rescaled to [-1, 1], episode stats, reward scaling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import vector as vector_wrappers


def make_envs(
    env_id: str,
    num_envs: int,
    *,
    vectorization_mode: str = "sync",
    normalize_reward: bool = False,
    gamma: float = 0.99,
    reward_clip: float = 0.0,
) -> gym.vector.VectorEnv:
    """`gymnasium.make_vec(env_id)` wrapped for the trainer.

    Same-step autoreset: when an episode ends, `step` returns the first observation of the next episode and puts the
    last one in `info["final_obs"]`, which the trainer needs to bootstrap time-limit truncations. The policy acts in
    [-1, 1]^A; a bounded Box is rescaled to that cube and actions are clipped to it. `RecordEpisodeStatistics` sits
    inside the reward scaling, so `info["episode"]["r"]` is the raw return.
    """
    envs = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode=vectorization_mode,
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    action_space, obs_space = envs.single_action_space, envs.single_observation_space
    if not isinstance(action_space, gym.spaces.Box):
        envs.close()
        raise ValueError(
            f"{env_id} has a {type(action_space).__name__} action space; flow policies need a Box (continuous) "
            "action space."
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        envs.close()
        raise ValueError(f"{env_id} has observation space {obs_space}; the MLP policy needs a flat Box observation.")
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    if np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high)):
        ones = np.ones(action_space.shape, dtype=np.float32)
        envs = vector_wrappers.RescaleAction(envs, -ones, ones)
        envs = vector_wrappers.ClipAction(envs)
    if normalize_reward:
        envs = vector_wrappers.NormalizeReward(envs, gamma=gamma)
        if reward_clip > 0:
            envs = vector_wrappers.ClipReward(envs, -reward_clip, reward_clip)
    return envs


def find_wrapper(env, wrapper_type):
    """The first wrapper of type `wrapper_type` in the chain of `env`, or None."""
    while env is not None:
        if isinstance(env, wrapper_type):
            return env
        env = getattr(env, "env", None)
    return None

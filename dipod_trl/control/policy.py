"""The flow-matching policy (an MLP velocity field) and the value critic.

`FlowPolicy` maps an observation to an action by integrating its velocity field v(o, x, t) with `flow_steps` Euler
steps from Gaussian noise at t=0 to the action at t=1. Actions live in the normalised box [-1, 1]^A (the environment
rescales and clips them), so one set of hyperparameters fits every Box env. The running observation statistics are
buffers of the policy, so a saved policy is self-contained: `FlowPolicy.from_pretrained(dir)` acts on raw observations.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .objectives import cfm_loss, cfm_path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the flow time t (..., 1) at frequencies pi * 2^k, k < dim / 2."""
    freqs = math.pi * 2.0 ** torch.arange(dim // 2, dtype=t.dtype, device=t.device)
    angles = t * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class FlowPolicy(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: list[int] = (64, 64),
        flow_steps: int = 8,
        time_embed_dim: int = 8,
        normalize_observation: bool = True,
        env_id: str | None = None,
    ):
        super().__init__()
        self.config = dict(
            obs_dim=obs_dim,
            action_dim=action_dim,
            hidden_sizes=list(hidden_sizes),
            flow_steps=flow_steps,
            time_embed_dim=time_embed_dim,
            normalize_observation=normalize_observation,
            env_id=env_id,
        )
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.flow_steps, self.time_embed_dim = flow_steps, time_embed_dim
        self.normalize_observation = normalize_observation
        self.velocity_net = mlp([obs_dim + action_dim + time_embed_dim, *hidden_sizes, action_dim], nn.SiLU)
        # A near-zero initial velocity makes the untrained policy's actions its noise, N(0, I): broad exploration.
        last = self.velocity_net[-1]
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)
        # Running observation statistics (parallel mean/variance, float64 so long runs do not drift).
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))

    # --- observation normalisation ------------------------------------------------------------------------------
    @torch.no_grad()
    def update_obs_stats(self, obs: torch.Tensor) -> None:
        """Fold a batch of raw observations (B, obs_dim) into the running mean and variance."""
        obs = obs.to(torch.float64).reshape(-1, self.obs_dim)
        batch_mean, batch_var, batch_count = obs.mean(0), obs.var(0, unbiased=False), obs.shape[0]
        delta = batch_mean - self.obs_mean
        total = self.obs_count + batch_count
        m2 = self.obs_var * self.obs_count + batch_var * batch_count
        m2 = m2 + delta.pow(2) * self.obs_count * batch_count / total
        self.obs_mean += delta * batch_count / total
        self.obs_var.copy_(m2 / total)
        self.obs_count.copy_(total)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations -> the network's inputs (standardised and clipped to [-10, 10], as CleanRL)."""
        obs = obs.to(torch.float32)
        if not self.normalize_observation:
            return obs
        mean, std = self.obs_mean.to(torch.float32), (self.obs_var + 1e-8).sqrt().to(torch.float32)
        return ((obs - mean) / std).clamp(-10.0, 10.0)

    # --- the flow ------------------------------------------------------------------------------------------------
    def velocity(self, obs_norm: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v_theta(o, x_t, t) for normalised observations (..., obs_dim), noisy actions (..., A), times (..., 1)."""
        return self.velocity_net(torch.cat([obs_norm, x, time_embedding(t, self.time_embed_dim)], dim=-1))

    def sample(self, obs_norm: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Integrate the flow from `noise` (B, A) at t=0 to actions at t=1 with `flow_steps` Euler steps."""
        x, dt = noise, 1.0 / self.flow_steps
        for k in range(self.flow_steps):
            t = torch.full((*x.shape[:-1], 1), k * dt, dtype=x.dtype, device=x.device)
            x = x + dt * self.velocity(obs_norm, x, t)
        return x

    def cfm_loss(
        self, obs_norm: torch.Tensor, action: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """Per-draw CFM losses (B, N) of actions (B, A) under draws t (B, N, 1), eps (B, N, A)."""
        x_t, target = cfm_path(action, eps, t)
        obs = obs_norm.unsqueeze(-2).expand(*eps.shape[:-1], obs_norm.shape[-1])
        return cfm_loss(self.velocity(obs, x_t, t), target)

    @torch.no_grad()
    def act(self, obs, noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> np.ndarray:
        """Actions in [-1, 1]-space (unclipped) for raw observations; zero noise unless `noise` or `generator`."""
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        if noise is None:
            shape = (obs.shape[0], self.action_dim)
            noise = torch.randn(shape, generator=generator) if generator is not None else torch.zeros(shape)
        return self.sample(self.normalize(obs), noise).numpy()

    # --- saving ----------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CONFIG_NAME), "w") as f:
            json.dump(self.config, f, indent=2)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, os.path.join(directory, WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory: str) -> "FlowPolicy":
        with open(os.path.join(directory, CONFIG_NAME)) as f:
            policy = cls(**json.load(f))
        policy.load_state_dict(load_file(os.path.join(directory, WEIGHTS_NAME)))
        return policy.eval()


class Critic(nn.Module):
    """State-value MLP on normalised observations (tanh, orthogonal init, as CleanRL's PPO)."""

    def __init__(self, obs_dim: int, hidden_sizes: list[int] = (64, 64)):
        super().__init__()
        self.net = mlp([obs_dim, *hidden_sizes, 1], nn.Tanh)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for layer in linears:
            nn.init.orthogonal_(layer.weight, gain=1.0 if layer is linears[-1] else math.sqrt(2))
            nn.init.zeros_(layer.bias)

    def forward(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return self.net(obs_norm).squeeze(-1)

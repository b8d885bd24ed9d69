"""The control policies (the flow-matching policy, and a Gaussian policy as PPO's reference) and the value critic.

`FlowPolicy` maps an observation to an action by integrating its velocity field v(o, x, t) with `flow_steps` Euler
steps from Gaussian noise at t=0 to the action at t=1. Actions live in the normalised box [-1, 1]^A (the environment
rescales and clips them), so one set of hyperparameters fits every Box env. The running observation statistics are
buffers of the policy, so a saved policy is self-contained: `FlowPolicy.from_pretrained(dir)` acts on raw observations.
`GaussianPolicy` is CleanRL's PPO actor behind the same interface, so the same trainer, budget and seeds give a PPO
row to compare flow policies with.
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


class ObservationNormalizedPolicy(nn.Module):
    """What every control policy shares: running observation statistics (saved with the weights), `act` on raw
    observations, and save / reload. Subclasses define `sample(obs_norm, noise)` and `surrogate_nll(...)`."""

    kind = ""

    def __init__(self, obs_dim: int, action_dim: int, normalize_observation: bool = True, **config):
        super().__init__()
        self.config = dict(kind=self.kind, obs_dim=obs_dim, action_dim=action_dim,
                           normalize_observation=normalize_observation, **config)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.normalize_observation = normalize_observation
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
    def from_pretrained(cls, directory: str) -> "ObservationNormalizedPolicy":
        """Reload a saved policy; called on the base class it builds the class the directory names."""
        with open(os.path.join(directory, CONFIG_NAME)) as f:
            config = json.load(f)
        kind = config.pop("kind", FlowPolicy.kind)  # policies saved before `kind` existed are flow policies
        policy_class = cls if cls.kind else POLICY_CLASSES[kind]
        if policy_class.kind != kind:
            raise ValueError(f"{directory} holds a {kind!r} policy, not a {policy_class.kind!r} one.")
        policy = policy_class(**config)
        policy.load_state_dict(load_file(os.path.join(directory, WEIGHTS_NAME)))
        return policy.eval()


class FlowPolicy(ObservationNormalizedPolicy):
    kind = "flow"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: list[int] = (64, 64),
        flow_steps: int = 8,
        time_embed_dim: int = 8,
        normalize_observation: bool = True,
        env_id: str | None = None,
        cfm_loss_reduction: str = "sqrt",
    ):
        super().__init__(obs_dim, action_dim, normalize_observation, hidden_sizes=list(hidden_sizes),
                         flow_steps=flow_steps, time_embed_dim=time_embed_dim, env_id=env_id,
                         cfm_loss_reduction=cfm_loss_reduction)
        self.flow_steps, self.time_embed_dim = flow_steps, time_embed_dim
        self.cfm_loss_reduction = cfm_loss_reduction
        self.velocity_net = mlp([obs_dim + action_dim + time_embed_dim, *hidden_sizes, action_dim], nn.SiLU)
        # A near-zero initial velocity makes the untrained policy's actions its noise, N(0, I): broad exploration.
        last = self.velocity_net[-1]
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

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
        return cfm_loss(self.velocity(obs, x_t, t), target, self.cfm_loss_reduction)

    # The ratio's stand-in for -log pi(a | o): the CFM loss of each (t, eps) draw.
    surrogate_nll = cfm_loss


class GaussianPolicy(ObservationNormalizedPolicy):
    """PPO's reference policy: a diagonal Gaussian with a state-independent log std (CleanRL's continuous PPO).

    Same interface as `FlowPolicy`, so the trainer runs it unchanged: `sample` maps the rollout's N(0, I) noise to an
    action, and `surrogate_nll` is the exact negative log-likelihood (one "draw"), which turns FPO's ratio into PPO's.
    """

    kind = "gaussian"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: list[int] = (64, 64),
        normalize_observation: bool = True,
        env_id: str | None = None,
    ):
        super().__init__(obs_dim, action_dim, normalize_observation, hidden_sizes=list(hidden_sizes), env_id=env_id)
        self.mean_net = mlp([obs_dim, *hidden_sizes, action_dim], nn.Tanh)
        linears = [m for m in self.mean_net if isinstance(m, nn.Linear)]
        for layer in linears:
            nn.init.orthogonal_(layer.weight, gain=0.01 if layer is linears[-1] else math.sqrt(2))
            nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def sample(self, obs_norm: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.mean_net(obs_norm) + self.log_std.exp() * noise

    def log_prob(self, obs_norm: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a | o) summed over action dims: (B, A) -> (B,)."""
        dist = torch.distributions.Normal(self.mean_net(obs_norm), self.log_std.exp())
        return dist.log_prob(action).sum(-1)

    def surrogate_nll(self, obs_norm, action, t=None, eps=None) -> torch.Tensor:
        """-log pi(a | o) as one (B, 1) "draw"; the CFM draws `t`, `eps` are not used."""
        return -self.log_prob(obs_norm, action).unsqueeze(-1)


POLICY_CLASSES = {cls.kind: cls for cls in (FlowPolicy, GaussianPolicy)}


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

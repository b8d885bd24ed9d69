"""`FlowPolicyTrainer`: on-policy FPO / FPO++ (+ DiPOD) for a flow-matching policy on gymnasium Box-action envs.

One update reads top to bottom, as CleanRL's `ppo_continuous_action.py`:

    rollout   num_steps steps of num_envs envs; each action is integrated from fresh noise, and N (t, eps) CFM draws
              per action are made and stored
    old loss  L_old = CFM losses of the rollout policy on its actions under those draws
    GAE       advantages and returns from the critic
    update    update_epochs passes of minibatches: FPO / FPO++ policy loss (+ dipod_beta * on-policy CFM loss)
              + vf_coef * value loss, one Adam step each
    log       one line of metrics.jsonl; periodic deterministic evaluation and checkpoints

With `warmstart_rollouts > 0` the run starts with DiPOD's self-distillation warm start (`warm_start`).
With `loss_type="ppo"` the same loop trains a Gaussian policy with PPO (its exact -log pi in place of the CFM loss):
the reference row of the comparisons.
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
import torch
from gymnasium.wrappers.vector import NormalizeReward

from ..checkpoints import resolve_resume
from ..finite import check_finite
from .config import FlowPolicyConfig
from .envs import find_wrapper, make_envs
from .metrics import MetricsLogger
from .objectives import compute_gae, dipod_loss, fpo_loss, fpo_plus_plus_loss, value_loss
from .policy import Critic, FlowPolicy, GaussianPolicy, ObservationNormalizedPolicy

TRAINER_STATE_NAME = "trainer_state.pt"
_ENV_HINT = "Check the environment and its wrappers; the checkpoints written so far predate this update."
_UPDATE_HINT = "Lower learning_rate or max_grad_norm, then resume from the last checkpoint."


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


@torch.no_grad()
def evaluate(
    policy: ObservationNormalizedPolicy, env_id: str | None = None, num_episodes: int = 10, seed: int = 12345, noise: str = "seeded"
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


class FlowPolicyTrainer:
    """Trains a `FlowPolicy` and a `Critic` on `config.env_id`; `train()` runs the whole budget.

        trainer = FlowPolicyTrainer(FlowPolicyConfig(env_id="Hopper-v5", total_timesteps=200_000))
        trainer.train()  # metrics.jsonl, checkpoint-N/ and policy/ under config.output_dir
    """

    def __init__(self, config: FlowPolicyConfig):
        self.config = config
        if config.torch_num_threads:
            torch.set_num_threads(config.torch_num_threads)
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        # One generator drives every random draw of training (action noise, CFM draws, minibatch order),
        # so a checkpoint can restore it exactly.
        self.generator = torch.Generator().manual_seed(config.seed)

        self.envs = make_envs(
            config.env_id,
            config.num_envs,
            vectorization_mode=config.vectorization_mode,
            normalize_reward=config.normalize_reward,
            gamma=config.gamma,
            reward_clip=config.reward_clip,
        )
        self.obs_dim = self.envs.single_observation_space.shape[0]
        self.action_dim = int(np.prod(self.envs.single_action_space.shape))
        self.policy = self.make_policy()
        self.critic = Critic(self.obs_dim, config.critic_hidden_sizes)
        self.optimizer = self.make_optimizer()

        self.update = 0  # completed FPO updates (rollout + epochs)
        self.global_step = 0  # optimizer steps of those updates
        self.env_steps = 0
        self.warmstart_done = False
        self.next_obs = None  # the envs' current observations between rollouts
        checkpoint = resolve_resume(config.resume_from_checkpoint, config.output_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def make_policy(self) -> ObservationNormalizedPolicy:
        cfg = self.config
        if cfg.loss_type == "ppo":
            return GaussianPolicy(self.obs_dim, self.action_dim, cfg.actor_hidden_sizes,
                                  normalize_observation=cfg.normalize_observation, env_id=cfg.env_id)
        return FlowPolicy(
            self.obs_dim,
            self.action_dim,
            hidden_sizes=cfg.actor_hidden_sizes,
            flow_steps=cfg.flow_steps,
            time_embed_dim=cfg.time_embed_dim,
            normalize_observation=cfg.normalize_observation,
            env_id=cfg.env_id,
            cfm_loss_reduction=cfg.cfm_loss_reduction,
        )

    def draw_cfm_samples(self, batch_shape) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        return draw_cfm_samples(batch_shape, cfg.num_cfm_samples, self.action_dim, self.generator, cfg.cfm_time_margin)

    def reset_envs(self) -> None:
        """Start fresh episodes, seeded by the run's seed and progress (so a resumed run does not replay episodes)."""
        self.next_obs, _ = self.envs.reset(seed=self.config.seed + self.update)

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.policy.parameters()) + list(self.critic.parameters())
        return torch.optim.Adam(params, lr=self.config.learning_rate, eps=1e-5)

    # --- rollout -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect_rollout(self, actor: ObservationNormalizedPolicy, with_values: bool = True) -> tuple[dict, dict]:
        """Run `num_steps` steps of every env with `actor`; returns the rollout tensors and timing/episode stats.

        There is one observation normaliser, `self.policy`'s: its statistics are updated with every observation
        before it is used (as CleanRL's NormalizeObservation), every actor (the warm start's frozen teacher too, as
        in the release) sees observations through it, and the normalised observation the actor saw is stored.
        """
        cfg = self.config
        T, E = cfg.num_steps, cfg.num_envs
        if self.next_obs is None:
            self.reset_envs()
        rollout = {
            "obs_raw": torch.zeros(T, E, self.obs_dim),
            "obs": torch.zeros(T, E, self.obs_dim),
            "actions": torch.zeros(T, E, self.action_dim),
            "rewards": torch.zeros(T, E),
            "terminations": torch.zeros(T, E),
            "dones": torch.zeros(T, E),
            "values": torch.zeros(T, E),
            "next_values": torch.zeros(T, E),
        }
        episode_returns, episode_lengths = [], []
        policy_time = sim_time = 0.0
        obs = self.next_obs
        phase = f"update {self.update + 1}" if with_values else "warm start"
        for step in range(T):
            where = f"{phase}, rollout step {step} (env step {self.env_steps + step * E})"
            start = time.perf_counter()
            obs_raw = torch.as_tensor(obs, dtype=torch.float32)
            # Before the observation normaliser sees it: one NaN would make its statistics, and the policy, NaN.
            check_finite(obs_raw, "the observation (envs x dims)", where, _ENV_HINT)
            if self.config.normalize_observation:
                self.policy.update_obs_stats(obs_raw)
            obs_norm = self.policy.normalize(obs_raw)
            noise = torch.randn((E, self.action_dim), generator=self.generator)
            action = actor.sample(obs_norm, noise)
            check_finite(action, "the policy's action (envs x dims)", where, _UPDATE_HINT)
            if with_values:
                rollout["values"][step] = self.critic(self.policy.normalize(obs_raw))
            action_np = action.numpy()
            policy_time += time.perf_counter() - start

            start = time.perf_counter()
            obs, reward, terminated, truncated, info = self.envs.step(action_np)
            sim_time += time.perf_counter() - start

            check_finite(reward, "the reward (one per env)", where, _ENV_HINT)
            done = terminated | truncated
            rollout["obs_raw"][step], rollout["obs"][step], rollout["actions"][step] = obs_raw, obs_norm, action
            rollout["rewards"][step] = torch.as_tensor(reward, dtype=torch.float32)
            rollout["terminations"][step] = torch.as_tensor(terminated, dtype=torch.float32)
            rollout["dones"][step] = torch.as_tensor(done, dtype=torch.float32)
            if with_values and done.any():
                # Bootstrap value of the episode's last observation (zeroed later for terminations).
                start = time.perf_counter()
                final_obs = torch.as_tensor(np.stack(info["final_obs"][done]), dtype=torch.float32)
                check_finite(final_obs, "the final observation of an episode", where, _ENV_HINT)
                rollout["next_values"][step, torch.as_tensor(done)] = self.critic(self.policy.normalize(final_obs))
                policy_time += time.perf_counter() - start
            if "_episode" in info:
                episode_returns += info["episode"]["r"][info["_episode"]].tolist()
                episode_lengths += info["episode"]["l"][info["_episode"]].tolist()
        self.next_obs = obs
        self.env_steps += T * E
        if with_values:
            # V(o_{t+1}) for steps that did not end an episode: the next stored value, or V of the current obs.
            last_values = self.critic(self.policy.normalize(torch.as_tensor(obs, dtype=torch.float32)))
            following = torch.cat([rollout["values"][1:], last_values.unsqueeze(0)])
            rollout["next_values"] = torch.where(rollout["dones"].bool(), rollout["next_values"], following)
        stats = {
            "policy_time": policy_time,
            "sim_time": sim_time,
            "episode_returns": episode_returns,
            "episode_lengths": episode_lengths,
        }
        return rollout, stats

    # --- DiPOD self-distillation warm start --------------------------------------------------------------------------
    def warm_start(self) -> dict:
        """Distil the freshly initialised actor into itself before RL (DiPOD's warm start for control).

        A frozen copy of the actor (the teacher) collects `warmstart_rollouts` rollouts; the student (the actor) is
        trained on the CFM loss of the teacher's (observation, action) pairs for `warmstart_iterations` steps, the
        critic untouched; then the optimizer is reset and FPO / FPO++ runs unchanged. The untrained velocity net is a
        poor flow model of its own samples; after distillation the CFM loss, the likelihood proxy of the FPO ratio,
        describes the policy's action distribution much better.
        """
        cfg = self.config
        teacher = copy.deepcopy(self.policy).eval().requires_grad_(False)
        obs_norm, actions, returns = [], [], []
        for _ in range(cfg.warmstart_rollouts):
            rollout, stats = self.collect_rollout(teacher, with_values=False)
            # The pairs are (observation as the teacher saw it through the shared normaliser, teacher's action).
            obs_norm.append(rollout["obs"].reshape(-1, self.obs_dim))
            actions.append(rollout["actions"].reshape(-1, self.action_dim))
            returns += stats["episode_returns"]
        obs_norm, actions = torch.cat(obs_norm), torch.cat(actions)

        # A fixed probe set of draws measures the distillation on the same numbers before and after.
        probe = torch.randperm(len(actions), generator=self.generator)[: min(len(actions), 1024)]
        probe_t, probe_eps = self.draw_cfm_samples((len(probe),))

        def probe_loss() -> float:
            with torch.no_grad():
                return self.policy.cfm_loss(obs_norm[probe], actions[probe], probe_t, probe_eps).mean().item()

        before = probe_loss()
        optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.warmstart_learning_rate)
        for _ in range(cfg.warmstart_iterations):
            idx = torch.randint(len(actions), (cfg.warmstart_batch_size,), generator=self.generator)
            t, eps = self.draw_cfm_samples((len(idx),))
            loss = self.policy.cfm_loss(obs_norm[idx], actions[idx], t, eps).mean()
            check_finite(loss, "the warm-start CFM loss", "warm start", _UPDATE_HINT)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.optimizer = self.make_optimizer()  # FPO starts from fresh Adam moments
        self.warmstart_done = True
        return {
            "warmstart/cfm_loss_before": before,
            "warmstart/cfm_loss_after": probe_loss(),
            "warmstart/pairs": len(actions),
            "warmstart/teacher_return": float(np.mean(returns)) if returns else float("nan"),
        }

    # --- FPO update ----------------------------------------------------------------------------------------------
    def update_policy(self, rollout: dict) -> dict:
        cfg = self.config
        B = cfg.batch_size
        t = rollout["cfm_t"].reshape(B, cfg.num_cfm_samples, 1)
        eps = rollout["cfm_eps"].reshape(B, cfg.num_cfm_samples, -1)
        batch = {
            "obs": rollout["obs"].reshape(B, -1),
            "actions": rollout["actions"].reshape(B, -1),
            "cfm_t": t,
            "cfm_eps": eps,
            "advantages": rollout["advantages"].reshape(B),
            "returns": rollout["returns"].reshape(B),
        }
        with torch.no_grad():
            # The old policy's losses under the stored draws (same weights and inputs as at sampling time).
            batch["cfm_old"] = self.policy.surrogate_nll(batch["obs"], batch["actions"], t, eps)
        if cfg.norm_adv:
            adv = batch["advantages"]
            batch["advantages"] = (adv - adv.mean()) / (adv.std() + 1e-8)

        sums: dict[str, float] = {}
        count = 0
        for _ in range(cfg.update_epochs):
            order = torch.randperm(B, generator=self.generator)
            for start in range(0, B, cfg.minibatch_size):
                idx = order[start : start + cfg.minibatch_size]
                out = minibatch_loss(self.policy, self.critic, {k: v[idx] for k, v in batch.items()}, cfg)
                where = f"update {self.update + 1}, optimizer step {self.global_step + 1}"
                check_finite(out.loss, "the minibatch loss", where, _UPDATE_HINT)
                self.optimizer.zero_grad()
                out.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    list(self.policy.parameters()) + list(self.critic.parameters()), cfg.max_grad_norm
                )
                check_finite(grad_norm, "the gradient norm", where, _UPDATE_HINT)
                self.optimizer.step()
                self.global_step += 1
                with torch.no_grad():
                    # Diagnostics from the unclamped log-ratio (per draw for fpo++, per action for fpo and ppo).
                    log_ratio = batch["cfm_old"][idx] - out.cfm_new
                    if cfg.loss_type != "fpo++":
                        log_ratio = log_ratio.mean(-1)
                    ratio = log_ratio.exp()
                    stats = {
                        "loss/policy": out.pg_loss.item(),
                        "loss/dipod_cfm": out.dipod_loss.item(),
                        "loss/value": out.value_loss.item(),
                        "loss/total": out.loss.item(),
                        # PPO's low-variance KL estimate, on the CFM log-ratio surrogate.
                        "policy/approx_kl": ((ratio - 1.0) - log_ratio).mean().item(),
                        "policy/clip_frac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item(),
                        "policy/ratio_mean": out.ratio.mean().item(),
                        "policy/abs_log_ratio_max": log_ratio.abs().max().item(),
                        "policy/grad_norm": grad_norm.item(),
                    }
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        metrics = {key: value / count for key, value in sums.items()}
        returns, values = batch["returns"], rollout["values"].reshape(B)
        metrics["policy/cfm_old"] = batch["cfm_old"].mean().item()
        metrics["value/explained_variance"] = (1.0 - (returns - values).var() / (returns.var() + 1e-8)).item()
        return metrics

    # --- the loop ----------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train for `total_timesteps` env steps; returns the final evaluation metrics."""
        cfg = self.config
        logger = MetricsLogger(cfg, resume_after_update=self.update if self.update > 0 or self.warmstart_done else None)
        self.reset_envs()
        if cfg.eval_every and self.env_steps == 0:
            # The untrained policy's evaluation: the start of every return curve.
            eval_returns = self.evaluate()
            logger.log({"update": 0, "env_steps": 0, "eval/return": float(eval_returns.mean()),
                        "eval/return_std": float(eval_returns.std())}, step=0)
        if cfg.warmstart_rollouts and not self.warmstart_done:
            start = time.perf_counter()
            record = {"update": 0, "env_steps": 0, **self.warm_start()}
            record["env_steps"] = self.env_steps
            record["time/warmstart_seconds"] = time.perf_counter() - start
            if cfg.eval_every:
                eval_returns = self.evaluate()
                record["eval/return"], record["eval/return_std"] = float(eval_returns.mean()), float(eval_returns.std())
            logger.log(record, step=self.env_steps)
            print(
                f"warm start: CFM loss on teacher actions {record['warmstart/cfm_loss_before']:.4f} -> "
                f"{record['warmstart/cfm_loss_after']:.4f} ({record['warmstart/pairs']} pairs)"
            )

        episode_returns: list[float] = []
        record: dict = {}
        while self.update < cfg.num_updates:
            update_start = time.perf_counter()
            if cfg.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.learning_rate * (1.0 - self.update / cfg.num_updates)

            # 1. rollout, and the CFM draws the ratio will use
            rollout, stats = self.collect_rollout(self.policy)
            draw_start = time.perf_counter()
            rollout["cfm_t"], rollout["cfm_eps"] = self.draw_cfm_samples((cfg.num_steps, cfg.num_envs))
            # 2. advantages
            rollout["advantages"], rollout["returns"] = compute_gae(
                rollout["rewards"],
                rollout["values"],
                rollout["next_values"],
                rollout["terminations"],
                rollout["dones"],
                cfg.gamma,
                cfg.gae_lambda,
            )
            # 3. policy and value update
            metrics = self.update_policy(rollout)
            update_time = time.perf_counter() - draw_start
            self.update += 1

            # 4. log
            episode_returns = stats["episode_returns"] or episode_returns
            elapsed = time.perf_counter() - update_start
            record = {
                "update": self.update,
                "global_step": self.global_step,
                "env_steps": self.env_steps,
                "episodic_return": float(np.mean(stats["episode_returns"])) if stats["episode_returns"] else None,
                "episodic_length": float(np.mean(stats["episode_lengths"])) if stats["episode_lengths"] else None,
                "episodes": len(stats["episode_returns"]),
                **metrics,
                "lr": self.optimizer.param_groups[0]["lr"],
                "time/sps": cfg.batch_size / elapsed,
                "time/policy_share": stats["policy_time"] / elapsed,
                "time/sim_share": stats["sim_time"] / elapsed,
                "time/update_share": update_time / elapsed,
            }
            last = self.update == cfg.num_updates
            if last or (cfg.eval_every and self.update % cfg.eval_every == 0):
                eval_returns = self.evaluate()
                record["eval/return"] = float(eval_returns.mean())
                record["eval/return_std"] = float(eval_returns.std())
            logger.log(record, step=self.env_steps)
            if self.update % cfg.logging_steps == 0 or last:
                print(self.format_record(record), flush=True)
            if cfg.save_every and (self.update % cfg.save_every == 0 or last):
                self.save_checkpoint(os.path.join(cfg.output_dir, f"checkpoint-{self.update}"))

        self.policy.save_pretrained(os.path.join(cfg.output_dir, "policy"))
        logger.close()
        self.envs.close()
        return {k: v for k, v in record.items() if k.startswith("eval/")} | {"env_steps": self.env_steps}

    def evaluate(self) -> np.ndarray:
        cfg = self.config
        self.policy.eval()
        returns = evaluate(self.policy, cfg.env_id, cfg.eval_episodes, cfg.eval_seed, cfg.eval_noise)
        self.policy.train()
        return returns

    @staticmethod
    def format_record(record: dict) -> str:
        def fmt(key, spec):
            value = record.get(key)
            return "-" if value is None else format(value, spec)

        return (
            f"update {record['update']} | env steps {record['env_steps']} | return {fmt('episodic_return', '.1f')} "
            f"| eval {fmt('eval/return', '.1f')} | pg {fmt('loss/policy', '.4f')} | cfm {fmt('loss/dipod_cfm', '.4f')} "
            f"| v {fmt('loss/value', '.3f')} | clip {fmt('policy/clip_frac', '.3f')} "
            f"| kl {fmt('policy/approx_kl', '.2e')} "
            f"| sps {fmt('time/sps', '.0f')}"
        )

    # --- checkpoints -------------------------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str) -> None:
        """policy/ (a loadable `FlowPolicy`, with its observation statistics) + trainer_state.pt (the rest)."""
        self.policy.save_pretrained(os.path.join(directory, "policy"))
        reward_normalizer = find_wrapper(self.envs, NormalizeReward)
        state = {
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "update": self.update,
            "global_step": self.global_step,
            "env_steps": self.env_steps,
            "warmstart_done": self.warmstart_done,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "return_rms": None
            if reward_normalizer is None
            else {k: getattr(reward_normalizer.return_rms, k) for k in ("mean", "var", "count")},
            "config": asdict(self.config),
        }
        torch.save(state, os.path.join(directory, TRAINER_STATE_NAME))

    def load_checkpoint(self, directory: str) -> None:
        """Continue from `save_checkpoint`'s files. Environments start fresh episodes (simulator state is not saved)."""
        state = torch.load(os.path.join(directory, TRAINER_STATE_NAME), weights_only=False)
        saved = type(self.policy).from_pretrained(os.path.join(directory, "policy"))
        self.policy.load_state_dict(saved.state_dict())
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.update, self.global_step, self.env_steps = state["update"], state["global_step"], state["env_steps"]
        self.warmstart_done = state["warmstart_done"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        reward_normalizer = find_wrapper(self.envs, NormalizeReward)
        if reward_normalizer is not None and state["return_rms"] is not None:
            for key, value in state["return_rms"].items():
                setattr(reward_normalizer.return_rms, key, value)

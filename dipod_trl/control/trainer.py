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

import numpy as np
import torch
from gymnasium.wrappers.vector import NormalizeReward

from ..guards.non_finite import check_finite
from ..saving.checkpoints import begin_checkpoint, load_checkpoint_file, mark_complete, resolve_resume
from ..saving.run_record import run_for, write_run
from .config import FlowPolicyConfig
from .envs import find_wrapper, make_envs
from .evaluation import evaluate
from .loss import draw_cfm_samples, minibatch_loss
from .metrics import MetricsLogger
from .objectives import compute_gae
from .policy import Critic, FlowPolicy, GaussianPolicy, ObservationNormalizedPolicy
from .random_state import capture_random_state, restore_random_state
from .resume import control_changes, warn_changes

TRAINER_STATE_NAME = "trainer_state.pt"
_ENV_HINT = "Check the environment and its wrappers; the checkpoints written so far predate this update."
_UPDATE_HINT = "Lower learning_rate or max_grad_norm, then resume from the last checkpoint."


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
        self.run = run_for(config.output_dir, checkpoint)  # the run's id (dipod_trl.saving.run_record)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        write_run(config.output_dir, self.run)

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
            self._fill_next_values(rollout, obs)
        stats = {
            "policy_time": policy_time,
            "sim_time": sim_time,
            "episode_returns": episode_returns,
            "episode_lengths": episode_lengths,
        }
        return rollout, stats

    def _fill_next_values(self, rollout: dict, obs) -> None:
        """V(o_{t+1}) for steps that did not end an episode: the next stored value, or V of the envs' current obs
        after the last step (steps that ended one hold V of the episode's final observation already)."""
        last_values = self.critic(self.policy.normalize(torch.as_tensor(obs, dtype=torch.float32)))
        following = torch.cat([rollout["values"][1:], last_values.unsqueeze(0)])
        rollout["next_values"] = torch.where(rollout["dones"].bool(), rollout["next_values"], following)

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
                stats = self._optimizer_step({k: v[order[start : start + cfg.minibatch_size]]
                                              for k, v in batch.items()})
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        metrics = {key: value / count for key, value in sums.items()}
        returns, values = batch["returns"], rollout["values"].reshape(B)
        metrics["policy/cfm_old"] = batch["cfm_old"].mean().item()
        metrics["value/explained_variance"] = (1.0 - (returns - values).var() / (returns.var() + 1e-8)).item()
        return metrics

    def _optimizer_step(self, minibatch: dict) -> dict:
        """One Adam step on a minibatch's loss, its gradient clipped; returns the step's diagnostics."""
        cfg = self.config
        out = minibatch_loss(self.policy, self.critic, minibatch, cfg)
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
            log_ratio = minibatch["cfm_old"] - out.cfm_new
            if cfg.loss_type != "fpo++":
                log_ratio = log_ratio.mean(-1)
            ratio = log_ratio.exp()
            return {
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

    # --- the loop ----------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train for `total_timesteps` env steps; returns the final evaluation metrics."""
        cfg = self.config
        logger = MetricsLogger(cfg, resume_after_update=self.update if self.update > 0 or self.warmstart_done else None)
        self.reset_envs()
        if cfg.eval_every and self.env_steps == 0:
            # The untrained policy's evaluation: the start of every return curve.
            logger.log({"update": 0, "env_steps": 0, **self.evaluation_metrics()}, step=0)
        if cfg.warmstart_rollouts and not self.warmstart_done:
            self._logged_warm_start(logger)

        record: dict = {}
        while self.update < cfg.num_updates:
            record = self._one_update()
            last = self.update == cfg.num_updates
            if last or (cfg.eval_every and self.update % cfg.eval_every == 0):
                record |= self.evaluation_metrics()
            logger.log(record, step=self.env_steps)
            if self.update % cfg.logging_steps == 0 or last:
                print(self.format_record(record), flush=True)
            if cfg.save_every and (self.update % cfg.save_every == 0 or last):
                self.save_checkpoint(os.path.join(cfg.output_dir, f"checkpoint-{self.update}"))

        self.policy.save_pretrained(os.path.join(cfg.output_dir, "policy"))
        logger.close()
        self.envs.close()
        return {k: v for k, v in record.items() if k.startswith("eval/")} | {"env_steps": self.env_steps}

    def _logged_warm_start(self, logger: MetricsLogger) -> None:
        """`warm_start`, its record logged (with an evaluation after it) and its CFM loss change printed."""
        start = time.perf_counter()
        record = {"update": 0, "env_steps": 0, **self.warm_start()}
        record["env_steps"] = self.env_steps
        record["time/warmstart_seconds"] = time.perf_counter() - start
        if self.config.eval_every:
            record |= self.evaluation_metrics()
        logger.log(record, step=self.env_steps)
        print(
            f"warm start: CFM loss on teacher actions {record['warmstart/cfm_loss_before']:.4f} -> "
            f"{record['warmstart/cfm_loss_after']:.4f} ({record['warmstart/pairs']} pairs)"
        )

    def _one_update(self) -> dict:
        """One FPO update: rollout, CFM draws, GAE, `update_epochs` of minibatches; returns its metrics record."""
        cfg = self.config
        update_start = time.perf_counter()
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate * (1.0 - self.update / cfg.num_updates)
        rollout, stats = self.collect_rollout(self.policy)
        draw_start = time.perf_counter()
        rollout["cfm_t"], rollout["cfm_eps"] = self.draw_cfm_samples((cfg.num_steps, cfg.num_envs))
        rollout["advantages"], rollout["returns"] = compute_gae(
            rollout["rewards"],
            rollout["values"],
            rollout["next_values"],
            rollout["terminations"],
            rollout["dones"],
            cfg.gamma,
            cfg.gae_lambda,
        )
        metrics = self.update_policy(rollout)
        update_time = time.perf_counter() - draw_start
        self.update += 1
        elapsed = time.perf_counter() - update_start
        returns, lengths = stats["episode_returns"], stats["episode_lengths"]
        return {
            "update": self.update,
            "global_step": self.global_step,
            "env_steps": self.env_steps,
            "episodic_return": float(np.mean(returns)) if returns else None,
            "episodic_length": float(np.mean(lengths)) if lengths else None,
            "episodes": len(returns),
            **metrics,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time/sps": cfg.batch_size / elapsed,
            "time/policy_share": stats["policy_time"] / elapsed,
            "time/sim_share": stats["sim_time"] / elapsed,
            "time/update_share": update_time / elapsed,
        }

    def evaluation_metrics(self) -> dict:
        """`evaluate`'s mean return and its spread over the episodes, as logged."""
        returns = self.evaluate()
        return {"eval/return": float(returns.mean()), "eval/return_std": float(returns.std())}

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
        """policy/ (a loadable `FlowPolicy`, with its observation statistics) + trainer_state.pt (the rest), then the
        completion marker: a save cut short leaves a folder that `resume_from_checkpoint: true` passes over.

        trainer_state.pt holds tensors and plain values only, so that it loads with `weights_only=True`."""
        begin_checkpoint(directory)
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
            **capture_random_state(),
            "return_rms": None
            if reward_normalizer is None
            else {k: torch.from_numpy(np.array(getattr(reward_normalizer.return_rms, k), dtype=np.float64))
                  for k in ("mean", "var", "count")},
            "config": asdict(self.config),
        }
        torch.save(state, os.path.join(directory, TRAINER_STATE_NAME))
        mark_complete(directory, {"id": self.run["run_id"], "trainer": type(self).__name__})

    def load_checkpoint(self, directory: str) -> None:
        """Continue from `save_checkpoint`'s files. Environments start fresh episodes (simulator state is not saved)."""
        state = load_checkpoint_file(os.path.join(directory, TRAINER_STATE_NAME))
        changes = control_changes(state.get("config", {}), asdict(self.config), directory)
        if changes:
            warn_changes(changes, directory, state["update"], self.config.output_dir)
            self.run.setdefault("changes", []).append({"step": state["update"], "checkpoint": directory,
                                                       "changes": changes})
        saved = type(self.policy).from_pretrained(os.path.join(directory, "policy"))
        self.policy.load_state_dict(saved.state_dict())
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.update, self.global_step, self.env_steps = state["update"], state["global_step"], state["env_steps"]
        self.warmstart_done = state["warmstart_done"]
        self.generator.set_state(state["generator"])
        restore_random_state(state)
        reward_normalizer = find_wrapper(self.envs, NormalizeReward)
        if reward_normalizer is not None and state["return_rms"] is not None:
            rms = reward_normalizer.return_rms
            rms.mean, rms.var = state["return_rms"]["mean"].numpy(), state["return_rms"]["var"].numpy()
            rms.count = float(state["return_rms"]["count"])

"""`FlowPolicyConfig`: every knob of the control trainer, one documented dataclass field each.

Recipes (`recipes/control/*.yaml`) set these fields one to one; `--key value` on the command line overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..guards.non_finite import check_finite_fields

# Not a class registry like dipod_trl.objectives: the three losses differ in three lines of one update (the policy
# class in trainer.make_policy, the surrogate in loss.minibatch_loss, per-draw or per-action ratio diagnostics in
# trainer._optimizer_step), and the loop reads top to bottom as CleanRL's does; classes would spread it over files.
LOSS_TYPES = ("fpo", "fpo++", "ppo")
CFM_REDUCTIONS = ("sqrt", "mean", "sum")
TRUST_REGION_MODES = ("ppo", "spo", "aspo")
EVAL_NOISE = ("zero", "seeded")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class FlowPolicyConfig:
    """Configuration of `FlowPolicyTrainer` (FPO / FPO++ with the DiPOD term on gymnasium Box-action envs)."""

    # --- environment -------------------------------------------------------------------------------------------
    env_id: str = field(
        default="Pendulum-v1",
        metadata={"help": "Gymnasium environment id; the action space must be a Box (e.g. HalfCheetah-v5, Hopper-v5)."},
    )
    num_envs: int = field(default=8, metadata={"help": "Number of parallel environments (`gymnasium.make_vec`)."})
    vectorization_mode: str = field(
        default="sync", metadata={"help": "`gymnasium.make_vec` mode: 'sync' (one process) or 'async' (subprocesses)."}
    )
    normalize_observation: bool = field(
        default=True,
        metadata={"help": "Normalise observations with running statistics kept inside the policy (saved with it)."},
    )
    normalize_reward: bool = field(
        default=True,
        metadata={"help": "Scale rewards by the running std of the discounted return (gymnasium NormalizeReward)."},
    )
    reward_clip: float = field(
        default=10.0, metadata={"help": "Clip normalised rewards to [-reward_clip, reward_clip]; 0 disables."}
    )

    # --- budget and rollout --------------------------------------------------------------------------------------
    total_timesteps: int = field(
        default=200_000,
        metadata={"help": "Environment steps of the whole run, summed over envs (includes warm-start rollouts)."},
    )
    num_steps: int = field(
        default=256, metadata={"help": "Steps per environment per rollout (batch = num_envs * num_steps)."}
    )
    seed: int = field(default=1, metadata={"help": "Seed of torch, numpy and the environments."})
    torch_num_threads: int = field(
        default=0, metadata={"help": "torch intra-op threads; 0 keeps torch's default. Use 1 when runs share cores."}
    )

    # --- policy --------------------------------------------------------------------------------------------------
    actor_hidden_sizes: list[int] = field(
        default_factory=lambda: [64, 64], metadata={"help": "Hidden layer widths of the velocity-field MLP."}
    )
    critic_hidden_sizes: list[int] = field(
        default_factory=lambda: [64, 64], metadata={"help": "Hidden layer widths of the value MLP."}
    )
    flow_steps: int = field(
        default=8, metadata={"help": "Euler steps that integrate the velocity field from noise (t=0) to action (t=1)."}
    )
    time_embed_dim: int = field(
        default=8, metadata={"help": "Width of the sinusoidal embedding of the flow time t (even)."}
    )

    # --- optimisation --------------------------------------------------------------------------------------------
    learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Adam learning rate of actor and critic (1e-3 learned faster than CleanRL's 3e-4 here)."},
    )
    anneal_lr: bool = field(default=True, metadata={"help": "Linearly anneal the learning rate to 0 over the run."})
    update_epochs: int = field(default=10, metadata={"help": "Passes over each rollout batch."})
    num_minibatches: int = field(
        default=32, metadata={"help": "Minibatches per pass; must divide num_envs * num_steps."}
    )
    gamma: float = field(default=0.99, metadata={"help": "Discount factor."})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda."})
    norm_adv: bool = field(default=True, metadata={"help": "Normalise advantages over the whole rollout batch."})
    vf_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss."})
    max_grad_norm: float = field(default=0.5, metadata={"help": "Global gradient-norm clip of actor + critic."})

    # --- objective -----------------------------------------------------------------------------------------------
    loss_type: str = field(
        default="fpo++",
        metadata={
            "help": "'fpo': one ratio per action, exp(mean_N L_old - mean_N L_new). 'fpo++': one ratio per "
            "(t, eps) draw, straight-through log-ratio clamp, current CFM loss clamped for negative advantages. "
            "'ppo': the reference baseline, a Gaussian policy (state-independent log std) with PPO's clipped "
            "objective on its exact log-likelihood, same networks, rollouts and optimiser."
        },
    )
    trust_region_mode: Optional[str] = field(
        default=None,
        metadata={
            "help": "'ppo' (clipped ratio), 'spo' (quadratic penalty), 'aspo' (PPO for A>0, SPO for A<0). "
            "Default: 'aspo' for fpo++ (as its control code), 'ppo' for fpo (as the FPO paper) and for ppo."
        },
    )
    clip_coef: float = field(
        default=0.2,
        metadata={
            "help": "Trust-region epsilon of PPO clipping and of the SPO penalty. FPO++ uses 0.05 with GPU-sized "
            "batches; at laptop scale 0.2 learns much faster (Pendulum, 51k steps: eval -776 with 0.05, -162 with 0.2)."
        },
    )
    num_cfm_samples: int = field(
        default=32,
        metadata={"help": "(t, eps) draws per action, drawn at rollout time and shared by old and new policy."},
    )
    cfm_loss_reduction: str = field(
        default="sqrt",
        metadata={
            "help": "How a draw's squared velocity error is reduced over action dims: 'sqrt' (sum / sqrt(A), the "
            "release's FPO++ default, Astro-Eric/DiPOD-release fpo_rsl_rl/modules/actor_critic.py), 'mean' or 'sum'."
        },
    )
    cfm_time_margin: float = field(
        default=0.005,
        metadata={
            "help": "Flow times of the CFM draws are uniform on [margin, 1 - margin]: the release draws from "
            "[0.005, 0.995] to avoid the unstable ends t=0 and t=1 (fpo_rsl_rl/algorithms/fpo.py). 0 = [0, 1]."
        },
    )
    log_ratio_clamp: float = field(
        default=10.0,
        metadata={"help": "fpo++: upper clamp of each per-draw log-ratio; straight-through, so gradients still flow."},
    )
    neg_adv_cfm_clamp: float = field(
        default=20.0, metadata={"help": "fpo++: clamp the current CFM loss at this value where the advantage is < 0."}
    )
    cfm_loss_clamp: float = field(
        default=20.0,
        metadata={"help": "fpo++: clamp old and current per-draw CFM losses at this value (before the ratio); 0 off."},
    )

    # --- DiPOD ---------------------------------------------------------------------------------------------------
    dipod_beta: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the per-update DiPOD term: the current policy's CFM loss on its own on-policy actions, "
            "added to the policy loss every update. This project's extension: the release's control DiPOD is the "
            "self-distillation warm start (warmstart_rollouts), so the default 0 keeps FPO / FPO++ exactly as "
            "released. 0.05 is the paper's LM value; advantages are normalised to unit std, so beta is the size of "
            "an SFT-like pull on the sampled actions relative to the advantage signal."
        },
    )
    warmstart_rollouts: int = field(
        default=0,
        metadata={
            "help": "DiPOD self-distillation warm start: rollouts (of num_envs * num_steps steps) collected with a "
            "frozen copy of the freshly initialised actor; 0 disables the warm start."
        },
    )
    warmstart_iterations: int = field(
        default=300, metadata={"help": "Warm start: gradient steps of the student actor on the CFM loss alone."}
    )
    warmstart_batch_size: int = field(
        default=256, metadata={"help": "Warm start: (observation, action) pairs per step."}
    )
    warmstart_learning_rate: float = field(default=1e-3, metadata={"help": "Warm start: Adam learning rate."})

    # --- evaluation, logging, checkpoints -------------------------------------------------------------------------
    eval_every: int = field(
        default=10,
        metadata={
            "help": "Evaluate every this many updates, and before training, after the warm start and at the end; "
            "0 = only at the end."
        },
    )
    eval_episodes: int = field(default=10, metadata={"help": "Episodes per evaluation (run as parallel envs)."})
    eval_seed: int = field(default=12345, metadata={"help": "Seed of the evaluation episodes and of their noise."})
    eval_noise: str = field(
        default="seeded",
        metadata={
            "help": "Initial flow noise at evaluation: 'seeded' (fixed draws from eval_seed: the stochastic policy, "
            "reproducibly) or 'zero' (FPO++'s zero-sampling; poor for the broad policies of short runs)."
        },
    )
    output_dir: str = field(
        default="outputs/control", metadata={"help": "Where metrics.jsonl, checkpoints and the policy go."}
    )
    run_name: Optional[str] = field(
        default=None, metadata={"help": "Run name for wandb / tensorboard; default from env, objective and seed."}
    )
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "Extra loggers besides metrics.jsonl: 'none', 'tensorboard', 'wandb'."},
    )
    logging_steps: int = field(default=1, metadata={"help": "Print a console line every this many updates."})
    save_every: int = field(
        default=0, metadata={"help": "Write output_dir/checkpoint-N every this many updates and at the end; 0 = off."}
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None,
        metadata={
            "help": "A checkpoint-N directory to continue from (weights, optimizer, normalisers, RNG), or 'true' for "
            "the last checkpoint in output_dir. metrics.jsonl keeps the rows up to that checkpoint's update."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "`dipod control` into an output_dir that already holds a run's files: overwrite them. Without it "
            "such an output_dir is refused unless resume_from_checkpoint is set."
        },
    )

    def __post_init__(self):
        def bad(name: str, why: str):
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        check_finite_fields(self)
        if self.loss_type not in LOSS_TYPES:
            bad("loss_type", f"must be one of {LOSS_TYPES}")
        if self.trust_region_mode is None:
            self.trust_region_mode = "aspo" if self.loss_type == "fpo++" else "ppo"
        if self.cfm_loss_reduction not in CFM_REDUCTIONS:
            bad("cfm_loss_reduction", f"must be one of {CFM_REDUCTIONS}")
        if not 0 <= self.cfm_time_margin < 0.5:
            bad("cfm_time_margin", "must be in [0, 0.5)")
        if self.loss_type == "ppo" and (self.dipod_beta or self.warmstart_rollouts):
            bad("loss_type", "ppo trains a Gaussian policy, whose likelihood is exact: the DiPOD terms "
                "(dipod_beta, warmstart_rollouts) apply to flow policies only; set them to 0")
        if self.trust_region_mode not in TRUST_REGION_MODES:
            bad("trust_region_mode", f"must be one of {TRUST_REGION_MODES}")
        if self.eval_noise not in EVAL_NOISE:
            bad("eval_noise", f"must be one of {EVAL_NOISE}")
        unknown = [name for name in self.report_to if name not in REPORT_TO]
        if unknown:
            bad("report_to", f"unknown logger(s) {unknown}; choose from {REPORT_TO}")
        if self.vectorization_mode not in ("sync", "async"):
            bad("vectorization_mode", "must be 'sync' or 'async'")
        for name in ("num_envs", "num_steps", "update_epochs", "num_minibatches", "flow_steps", "num_cfm_samples",
                     "eval_episodes", "warmstart_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("total_timesteps", "warmstart_rollouts", "warmstart_iterations", "eval_every", "save_every",
                     "torch_num_threads"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "warmstart_learning_rate"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("dipod_beta", "vf_coef", "reward_clip", "cfm_loss_clamp"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0 <= self.gamma <= 1:
            bad("gamma", "must be in [0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            bad("gae_lambda", "must be in [0, 1]")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            bad("time_embed_dim", "must be even and >= 2")
        if not self.actor_hidden_sizes or min(self.actor_hidden_sizes) < 1:
            bad("actor_hidden_sizes", "must be a non-empty list of positive widths")
        if not self.critic_hidden_sizes or min(self.critic_hidden_sizes) < 1:
            bad("critic_hidden_sizes", "must be a non-empty list of positive widths")
        if self.batch_size % self.num_minibatches:
            bad("num_minibatches", f"must divide the batch num_envs * num_steps = {self.batch_size}")
        if self.total_timesteps < self.batch_size * (1 + self.warmstart_rollouts):
            bad("total_timesteps", f"must cover the warm-start rollouts and one rollout of {self.batch_size} steps")

    @property
    def batch_size(self) -> int:
        """Transitions per rollout."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """FPO updates of the run: the budget left after the warm-start rollouts, in rollouts."""
        return self.total_timesteps // self.batch_size - self.warmstart_rollouts

"""`DiPODConfig`: TRL's `GRPOConfig` plus what diffusion policies need.

Fields of `GRPOConfig` are reused where they mean the same thing here (`num_generations`, `temperature`, `epsilon`,
`beta`, `num_iterations`, `max_completion_length`, `scale_rewards`, `reward_weights`, `generation_batch_size`,
logging, saving, evaluation). `GRPOConfig` fields that cannot apply to a masked diffusion policy are refused with an
error that says why, rather than silently ignored.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from .guards.non_finite import check_finite_fields
from .objectives import DIPOD_NORMALIZATIONS, OBJECTIVES, objective_class
from .options import DiPODTermArguments, ElboSamplingArguments, FastDecodingArguments, SamplerArguments


def apply_device_defaults(args) -> None:
    """Defaults for CPU-only machines and DDP: bf16 off unless asked for, `use_cpu` on in a multi-process CPU launch,
    no pinned memory without an accelerator, and DDP not searching for unused parameters.

    TRL turns bf16 on everywhere, which only slows small models down on a CPU. accelerate starts several CPU
    processes with its torchrun launcher (`accelerate launch --multi_gpu ...` or recipes/accelerate/cpu2.yaml) but
    joins them into one gloo group only when the training arguments say `use_cpu`; without it every process would
    silently train alone.
    """
    if args.bf16 is None:
        args.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not args.fp16
    if not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # accelerate runs an FSDP config on CPUs as plain DDP (with use_cpu) or as unconnected single processes.
        raise ValueError(
            "FSDP needs CUDA: without it accelerate would not shard anything. On CPUs use "
            "recipes/accelerate/cpu2_zero3.yaml (DeepSpeed ZeRO-3 shards parameters over gloo) or cpu2.yaml (DDP)."
        )
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args.use_cpu = True
    if not torch.accelerator.is_available():
        args.dataloader_pin_memory = False  # nothing to pin for; torch would warn on every data loader
    if args.ddp_find_unused_parameters is None:
        # Diffusion LMs (and their LoRA adapters) use every parameter in each forward pass; transformers would
        # otherwise ask DDP to search the graph for unused ones at every step.
        args.ddp_find_unused_parameters = False



# GRPOConfig fields with no meaning for masked diffusion, the value they must keep, and why.
REFUSED_GRPO_OPTIONS = {
    "use_vllm": (False, "vLLM does not serve masked diffusion LMs; generation uses dipod_trl.generate. (A judge "
                 "reward model can still be served with vLLM, see reward_models.JudgeReward.)"),
    "use_transformers_continuous_batching": (False, "continuous batching is an autoregressive decoding feature"),
    "top_p": (1.0, "the diffusion sampler has no nucleus filtering; use `temperature` and `remasking`"),
    "top_k": (0, "the diffusion sampler has no top-k filtering; use `temperature` and `remasking`"),
    "min_p": (None, "the diffusion sampler has no min-p filtering"),
    "repetition_penalty": (1.0, "a repetition penalty needs left-to-right decoding"),
    "loss_type": ("dapo", f"the loss is chosen with `objective` ({' | '.join(OBJECTIVES)})"),
    "importance_sampling_level": ("token", "FPO and SPG work on sequences, diffu-GRPO on tokens, by construction"),
    "top_entropy_quantile": (1.0, "token entropies of the one-step estimate are not a policy entropy"),
    "entropy_coef": (0.0, "no tractable entropy for a diffusion policy"),
    "use_adaptive_entropy": (False, "no tractable entropy for a diffusion policy"),
    "off_policy_mask_threshold": (None, "needs per-token sampling log-probabilities"),
    "delta": (None, "two-sided clipping is not implemented for the diffusion objectives"),
    "cast_lm_head_to_fp32": (False, "log-probabilities are computed in float32 by dipod_trl.likelihood already"),
}


def check_training_length(args) -> None:
    """Refuse `max_steps=0`: transformers reads it as "not set" and trains num_train_epochs instead."""
    if args.max_steps == 0:
        raise ValueError("max_steps=0 would train nothing (transformers then falls back to num_train_epochs and "
                         "trains anyway). Give a positive number of optimizer steps, or -1 (the default) to train "
                         "num_train_epochs epochs.")


@dataclass
class DiPODConfig(GRPOConfig, SamplerArguments, FastDecodingArguments, ElboSamplingArguments, DiPODTermArguments):
    r"""
    Configuration class for [`DiPODTrainer`]. Only the parameters specific to diffusion policies are listed here; see
    `trl.GRPOConfig` for the rest.

    > Parameters that control the objective

    objective (`str`, defaults to `"fpo"`): policy-gradient surrogate. `fpo`, `diffu_grpo` or `spg`.
    dipod_beta (`float`, defaults to `0.05`): weight of DiPOD's on-policy self-distillation term. `0` is the base
        method exactly.
    dipod_normalization (`str` or `None`): how the on-policy ELBO term is averaged over the batch.
    spg_eubo_beta, spg_negative_bound, spg_mix_weight: SPG's upper bound for negative advantages.
    kl_estimator: how FPO's KL penalty (weight `beta`) is estimated.

    > Parameters that control likelihood estimation

    elbo_num_samples, elbo_estimator, one_step_masks, p_mask_prompt, elbo_chunk_size, elbo_grad_chunk_size.

    > Parameters that control diffusion sampling

    diffusion_steps, block_length, remasking, cfg_scale, max_prompt_length, prompt_truncation; fast rollouts:
    kv_cache, cache_refresh_steps, confidence_threshold (completions are still scored with the exact model).

    > Parameters that control the drift monitor and robustness

    drift_num_orders, drift_num_sequences, drift_every, reward_nan_policy.

    Option groups shared with other commands are declared once in `dipod_trl.options` and composed here:
    `SamplerArguments` (block_length, remasking, cfg_scale; temperature is GRPOConfig's),
    `FastDecodingArguments` (kv_cache, cache_refresh_steps, confidence_threshold), `ElboSamplingArguments`
    (elbo_num_samples, elbo_estimator), `DiPODTermArguments` (dipod_beta). The objective named by `objective` fills
    the defaults it decides (`dipod_normalization`, `p_mask_prompt`) and checks what depends on it.

    Defaults that differ from `GRPOConfig`: `max_completion_length=256` (d1's setting), activation checkpointing off
    (small models gain nothing from it; LLaDA, Dream and the tiny model support it), `bf16=None` meaning bf16 only
    where CUDA supports it (TRL turns it on even on CPUs, where it only slows the tiny model down).
    """

    # Objective
    objective: str = field(
        default="fpo",
        metadata={
            "help": "Policy-gradient surrogate for the diffusion policy. 'fpo': PPO-clipped ratio "
            "exp(ELBO_theta - ELBO_old) per sequence, masks shared between old, current and reference policy. "
            "'diffu_grpo': d1's per-token clipped ratio on one-step estimates. 'spg': SPG's sandwich, the ELBO for "
            "positive advantages and an upper bound (EUBO) for negative ones. 'espo': ESPO's clipped sequence ratio "
            "exp((ELBO_theta - ELBO_old) / max_completion_length). 'gdpo': the same ratio normalised by each "
            "completion's length, on elbo_estimator='quadrature'. The registry is "
            "dipod_trl.objectives.OBJECTIVES."
        },
    )
    dipod_normalization: str | None = field(
        default=None,
        metadata={
            "help": "How the on-policy ELBO term is averaged. 'sequence': batch mean of each completion's summed "
            "ELBO (nats per sequence). 'token': summed ELBOs over summed completion lengths (nats per token, "
            "length-weighted). Default: as the paper's release does it, 'sequence' for fpo, 'token' for spg and for "
            "diffu_grpo (where the term is the mean one-step token log-likelihood, the quantity d1's loss averages)."
        },
    )
    spg_eubo_beta: float = field(
        default=1.5,
        metadata={"help": "SPG: exponent of the Renyi upper bound (EUBO) used for negative advantages (>= 1)."},
    )
    spg_negative_bound: str = field(
        default="eubo",
        metadata={
            "help": "SPG: bound for negative advantages. 'eubo': the upper bound; 'mix': spg_mix_weight * EUBO + "
            "(1 - spg_mix_weight) * ELBO (SPG's mixture variant)."
        },
    )
    spg_mix_weight: float = field(
        default=0.5,
        metadata={"help": "SPG: weight of the EUBO in the mixture when spg_negative_bound='mix'."},
    )
    kl_estimator: str = field(
        default="k3",
        metadata={
            "help": "FPO's KL penalty to the reference (weight `beta`). 'k3': exp(d) - d - 1 on the per-token ELBO "
            "difference d = (ELBO_ref - ELBO_theta) / length. 'linear_sequence': ELBO_theta - ELBO_ref in nats per "
            "sequence, as the paper's release (its FPO branch). espo and gdpo: 'k2', (ELBO_theta - ELBO_ref)^2 / 2 "
            "summed over sequences and divided by their summed lengths (ESPO's release), or 'k3'. diffu_grpo always "
            "uses d1's per-token k3; spg has no KL."
        },
    )

    # Likelihood estimation
    one_step_masks: str = field(
        default="canvas",
        metadata={
            "help": "diffu_grpo's one-step estimate masks 'canvas': the whole max_completion_length canvas, the "
            "positions after the first EOS included (d1's way; the real tokens are scored), or 'completion': only "
            "the completion up to its first EOS, the rest not attended."
        },
    )
    p_mask_prompt: float | None = field(
        default=None,
        metadata={
            "help": "Probability of also masking each prompt token when scoring (d1's regulariser; makes the "
            "estimate biased). Default: 0.15 for diffu_grpo (d1's value), 0 for fpo and spg."
        },
    )
    elbo_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Rows per forward pass when scoring without gradients (old/reference/monitor); bounds memory."
        },
    )
    elbo_grad_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Rows (completion x mask sample) per forward pass in the gradient pass. Each chunk runs under "
            "activation checkpointing: its activations are freed after the forward pass and recomputed in backward "
            "one chunk at a time, so training memory is that of one chunk, flat in elbo_num_samples and in the "
            "micro-batch, with the same loss and gradients, for one extra forward pass. None: all "
            "per_device_train_batch_size * elbo_num_samples rows in one pass."
        },
    )

    # Diffusion sampling
    max_completion_length: int | None = field(
        default=256,
        metadata={"help": "Completion length: the canvas that starts fully masked (LLaDA's gen_length)."},
    )
    diffusion_steps: int = field(
        default=128,
        metadata={
            "help": "Denoising steps per completion, split equally between blocks; must be a multiple of "
            "max_completion_length / block_length."
        },
    )
    max_prompt_length: int | None = field(
        default=512,
        metadata={"help": "Longest prompt in tokens; what happens to longer ones is set by prompt_truncation."},
    )
    prompt_truncation: str = field(
        default="error",
        metadata={
            "help": "A prompt longer than max_prompt_length: 'error' stops with the offending prompt named; 'left' "
            "keeps its last max_prompt_length tokens and warns."
        },
    )

    # Drift monitor and robustness
    drift_num_orders: int = field(
        default=4,
        metadata={
            "help": "Random generation orders per monitored completion for the drift monitor: it logs the ELBO "
            "estimate (mean log-likelihood over orders), the importance-weighted bound (log-mean-exp over orders) "
            "and their gap, the paper's 'double drift'. Costs drift_num_orders * completion_length forward passes "
            "per monitored completion. 0 disables the monitor."
        },
    )
    drift_num_sequences: int = field(
        default=4,
        metadata={"help": "Completions per process and generation batch that the drift monitor scores."},
    )
    drift_every: int = field(
        default=1,
        metadata={"help": "Run the drift monitor on every n-th generation batch (it is expensive on large models)."},
    )
    reward_nan_policy: str = field(
        default="error",
        metadata={
            "help": "A reward function that returns None or NaN: 'error' stops and names the function and sample; "
            "'skip' keeps TRL's behaviour (the value is ignored; a completion no function scored gets advantage 0)."
        },
    )

    # Defaults that differ from GRPOConfig
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing`. Off by default (TRL turns it on): small models "
            "gain nothing from it. LLaDA, Dream and the tiny model support it; turn it on for large models to trade "
            "about a fifth more compute for activation memory."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Default: on where CUDA supports bf16, off elsewhere (e.g. CPU)."},
    )

    def __post_init__(self):
        check_finite_fields(self)
        check_training_length(self)
        apply_device_defaults(self)
        self._check_group_sizes()  # before TRL's checks, which divide by num_generations
        super().__post_init__()
        self._validate()
        self._warn_if_greedy()

    def _check_group_sizes(self) -> None:
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2, got {self.num_generations}: each completion's advantage "
                "compares it with the other completions of its prompt. Set e.g. --num_generations 8."
            )

    def _warn_if_greedy(self) -> None:
        if self.temperature == 0 and self.remasking != "random":
            warnings.warn(
                f"temperature=0 with remasking={self.remasking!r} decodes greedily: the num_generations completions "
                "of a prompt are identical, so every group-relative advantage is 0 (frac_reward_zero_std = 1) and "
                "only the DiPOD term trains. Sample with temperature > 0 (e.g. 1.0) for RL.",
                stacklevel=3,
            )

    def _validate(self) -> None:
        def choice(name, options):
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}.")

        if self.num_iterations < 1:
            raise ValueError(f"num_iterations={self.num_iterations}: each generation batch is trained on "
                             "num_iterations times, so below 1 the run would save its starting model as the result "
                             "after 0 steps. Give num_iterations >= 1 (1: on-policy).")
        objective = objective_class(self.objective)
        for each in OBJECTIVES.values():
            each.check_options(self)
        objective.configure(self)  # dipod_normalization and p_mask_prompt defaults; ELBO sampling checks
        choice("prompt_truncation", ("error", "left"))
        choice("reward_nan_policy", ("error", "skip"))
        choice("dipod_normalization", DIPOD_NORMALIZATIONS)
        if not 0.0 <= self.p_mask_prompt < 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1), got {self.p_mask_prompt}.")
        self.check_dipod_term()
        for name in ("elbo_chunk_size", "elbo_grad_chunk_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of rows or None, got {getattr(self, name)}.")
        self.check_sampler()
        length = self.max_completion_length
        if length is None or length < 1 or length % self.block_length != 0:
            raise ValueError(
                f"max_completion_length ({length}) must be a positive multiple of block_length ({self.block_length}), "
                f"e.g. --max_completion_length {self.block_length * max(1, (length or 0) // self.block_length)}."
            )
        num_blocks = self.max_completion_length // self.block_length
        if self.diffusion_steps < 1 or self.diffusion_steps % num_blocks != 0:
            raise ValueError(
                f"diffusion_steps ({self.diffusion_steps}) must be a positive multiple of the number of blocks "
                f"(max_completion_length / block_length = {num_blocks})."
            )
        self.check_fast_decoding()
        if self.drift_num_orders < 0 or self.drift_num_sequences < 0 or self.drift_every < 1:
            raise ValueError("drift_num_orders and drift_num_sequences must be >= 0 and drift_every >= 1.")
        for name, (allowed, why) in REFUSED_GRPO_OPTIONS.items():
            if getattr(self, name, allowed) != allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by DiPODTrainer: {why}.")

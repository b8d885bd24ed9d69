"""Option groups that several commands share, each declared once: its fields (with their help), its checks.

A command's arguments compose the groups it needs by inheritance (`class DiPODConfig(GRPOConfig,
FastDecodingArguments, ...)`), so that `HfArgumentParser` and recipes see the same flat fields everywhere. A command
that wants other defaults for a group takes `with_defaults(group, name=value)`: same fields, help and checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .masks import ESTIMATORS, check_num_samples

KV_CACHE_MODES = (None, "prefix", "dual")
REMASKING_RULES = ("low_confidence", "random", "margin", "entropy")
# What a user may choose; `one_step` is diffu-GRPO's own draw, chosen by the objective.
ELBO_ESTIMATORS = tuple(name for name in ESTIMATORS if name != "one_step")


def with_defaults(group: type, **defaults) -> type:
    """The option group `group` with other defaults for some of its fields (their type, help and checks stay)."""
    namespace = {"__annotations__": {}, "__module__": group.__module__, "__qualname__": group.__qualname__}
    for option in dataclasses.fields(group):
        if option.name in defaults:
            namespace["__annotations__"][option.name] = option.type
            namespace[option.name] = field(default=defaults.pop(option.name), metadata=option.metadata)
    if defaults:
        raise TypeError(f"{group.__name__} has no option(s) {sorted(defaults)}.")
    return dataclass(kw_only=True)(type(group.__name__, (group,), namespace))


@dataclass(kw_only=True)
class SamplerArguments:
    """The masked-diffusion sampler's choices that training, `dipod eval` and `dipod generate` share.

    The completion length and the number of denoising steps are declared by each command, because they differ in
    name and default: training follows TRL (`max_completion_length`) and names the steps `diffusion_steps`; `dipod
    eval` sweeps several `gen_length`s with `steps` defaulting to half of each. In `DiPODConfig` the `temperature`
    field is `GRPOConfig`'s (default 1.0: RL samples), which takes precedence over this one.

    `dipod_trl.generate` keeps its explicit keywords (`generate(model, ids, gen_length=..., block_length=...,
    steps=..., temperature=...)`, LLaDA's reference form, which callers outside this package use): a command passes
    its groups as `**args.sampler_options(), **args.fast_decoding()`, each group's names being `generate`'s.
    """

    block_length: int = field(
        default=32,
        metadata={"help": "Semi-autoregressive block length; the completion length must be a multiple of it."},
    )
    temperature: float = field(default=0.0, metadata={"help": "Gumbel-max sampling temperature; 0 is greedy."})
    remasking: str = field(
        default="low_confidence",
        metadata={"help": f"Which predictions a step commits first: one of {', '.join(REMASKING_RULES)}."},
    )
    cfg_scale: float = field(
        default=0.0,
        metadata={"help": "Classifier-free guidance scale (0 disables it); in training also used when scoring."},
    )

    def sampler_options(self) -> dict:
        """The options as keyword arguments of `generate`."""
        return {name: getattr(self, name) for name in ("block_length", "temperature", "remasking", "cfg_scale")}

    def check_sampler(self) -> None:
        """Refuse values `generate` would refuse, when the arguments are parsed rather than at the first batch."""
        if self.block_length < 1:
            raise ValueError(f"block_length must be a positive number of tokens, got {self.block_length}.")
        if self.remasking not in REMASKING_RULES:
            raise ValueError(f"remasking must be one of {REMASKING_RULES}, got {self.remasking!r}.")
        for name in ("temperature", "cfg_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


def check_fast_decoding(
    *, kv_cache: str | None, cache_refresh_steps: int | None, confidence_threshold: float | None,
    cfg_scale: float = 0.0,
) -> None:
    """Check the fast-decoding options; errors name the option at fault and what it accepts."""
    if kv_cache not in KV_CACHE_MODES:
        raise ValueError(f"kv_cache must be None, 'prefix' or 'dual', got {kv_cache!r}.")
    if cache_refresh_steps is not None:
        if isinstance(cache_refresh_steps, bool) or not isinstance(cache_refresh_steps, int) or cache_refresh_steps < 1:
            raise ValueError(
                f"cache_refresh_steps must be a positive integer (or None: refresh at each new block only), got "
                f"{cache_refresh_steps!r}."
            )
        if kv_cache is None:
            raise ValueError("cache_refresh_steps is set but kv_cache is None: set kv_cache='prefix' or 'dual'.")
    if confidence_threshold is not None and not 0 < confidence_threshold <= 1:
        raise ValueError(
            f"confidence_threshold must be in (0, 1] (a probability; None commits the fixed number per step), got "
            f"{confidence_threshold!r}."
        )
    if kv_cache is not None and cfg_scale > 0:
        raise ValueError(
            "kv_cache does not support classifier-free guidance (cfg_scale > 0): set kv_cache=None or cfg_scale=0."
        )


@dataclass(kw_only=True)
class FastDecodingArguments:
    """Fast decoding (Fast-dLLM's block cache and parallel decoding) for `dipod_trl.generate`; all off by default."""

    kv_cache: str | None = field(
        default=None,
        metadata={
            "help": "Block key/value cache for generation (Fast-dLLM): None decodes exactly; 'prefix' reuses the "
            "keys/values of the prompt and finished blocks while a block is decoded; 'dual' also those of the "
            "not-yet-decoded suffix. Refreshed with a full forward at each new block (and every cache_refresh_steps "
            "steps). Approximate: completions differ from exact decoding. Not with cfg_scale > 0. Models without "
            "cache support decode exactly, with a warning."
        },
    )
    cache_refresh_steps: int | None = field(
        default=None,
        metadata={
            "help": "With kv_cache: also refresh the cache with a full forward every n denoising steps inside a block "
            "(None: only at each new block; 1: every step, i.e. exact decoding)."
        },
    )
    confidence_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Parallel decoding (Fast-dLLM): each step commits every masked position of the current block "
            "whose predicted token has probability above this threshold, in (0, 1], and at least as many as the "
            "fixed schedule would (at least one), so a block never takes more than its steps. None: the fixed "
            "number per step."
        },
    )

    def __post_init__(self):
        self.check_fast_decoding()

    def fast_decoding(self) -> dict:
        """The options as keyword arguments of `generate` (all None: exact decoding)."""
        return {name: getattr(self, name) for name in ("kv_cache", "cache_refresh_steps", "confidence_threshold")}

    def check_fast_decoding(self) -> None:
        check_fast_decoding(**self.fast_decoding(), cfg_scale=getattr(self, "cfg_scale", 0.0))


@dataclass(kw_only=True)
class ElboSamplingArguments:
    """How the ELBO of a completion is estimated: Monte-Carlo masks per estimate, and how they are drawn."""

    elbo_num_samples: int = field(
        default=2,
        metadata={
            "help": "Monte-Carlo samples (masks) per completion for each ELBO estimate, scored in one batched pass. "
            "In RL training: per inner iteration, for fpo and spg; diffu_grpo always uses d1's one-step estimate "
            "(one sample)."
        },
    )
    elbo_estimator: str = field(
        default="antithetic",
        metadata={
            "help": "ELBO estimator: 'mc' (mask ratio uniform), 'antithetic' (pairs of complementary masks, "
            "coupled-GRPO style; needs an even elbo_num_samples), 'stratified' (stratified mask ratios, "
            "LLaDA-1.5's VRPO), 'control_variate' (one fully masked sample as a control variate for the others; "
            "elbo_num_samples >= 2; not with spg), all unbiased for the ELBO; 'quadrature' (pairs of complementary "
            "halves: the time integral's midpoint node with an exact count, deliberately biased, lowest error on "
            "the demo's model; needs an even elbo_num_samples); or 'block_random' (SPG's forward_type block_random: "
            "one random block of block_length partly masked, later blocks and the canvas past the first EOS masked; "
            "unbiased for the block-by-block ELBO of the semi-autoregressive sampler; elbo_num_samples is SPG's "
            "num_t). docs/estimators.md has their measured errors."
        },
    )

    def check_elbo_sampling(self, *, samples_drawn: bool = True) -> None:
        """`samples_drawn=False`: the estimate in use draws its own masks (diffu-GRPO); only the choice is checked."""
        if self.elbo_estimator not in ELBO_ESTIMATORS:
            raise ValueError(f"elbo_estimator must be one of {ELBO_ESTIMATORS}, got {self.elbo_estimator!r}.")
        if samples_drawn:
            check_num_samples(self.elbo_num_samples, self.elbo_estimator, names=("elbo_num_samples", "elbo_estimator"))
        elif self.elbo_num_samples < 1:
            raise ValueError(f"elbo_num_samples must be >= 1, got {self.elbo_num_samples}.")


# SFT and the demo: one Monte-Carlo sample (mask ratio uniform) per estimate by default.
OneSampleElboArguments = with_defaults(ElboSamplingArguments, elbo_num_samples=1, elbo_estimator="mc")


@dataclass(kw_only=True)
class DiPODTermArguments:
    """The weight of DiPOD's on-policy self-distillation term."""

    dipod_beta: float = field(
        default=0.05,
        metadata={
            "help": "Weight of DiPOD's self-distillation term: loss = surrogate - dipod_beta * (on-policy ELBO term). "
            "0.05 is the paper's default; 0 reproduces the base objective exactly."
        },
    )

    def check_dipod_term(self) -> None:
        if self.dipod_beta < 0:
            raise ValueError(f"dipod_beta must be >= 0, got {self.dipod_beta}.")

"""What every surrogate objective provides, so that the trainer and the config ask it instead of branching.

An [`Objective`] owns, for one policy-gradient surrogate: the masks an inner iteration scores on, how the token
log-probabilities on those masks become the scores its ratio is built on, its loss, the default normalisation of
DiPOD's on-policy term, and its config defaults and checks. The math is pure: an objective reads its settings from
the config it was built with and works on tensors, so tests need no trainer.

Shapes: `B` completions, `K` Monte-Carlo samples, `C` completion positions. "ELBO" is a completion's summed ELBO in
nats (one value per sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..likelihood import elbo_from_token_logps
from ..masks import BLOCK_CAUSAL_REFUSED, MaskDraw, draw_masks
from ..randomness import Generators


@dataclass
class ObjectiveOutput:
    """A surrogate loss (to minimise), detached statistics for logging, and each completion's on-policy estimate
    (summed ELBO, or for diffu-GRPO summed one-step token log-likelihood) that DiPOD's term averages."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    on_policy: torch.Tensor | None = None


@dataclass
class LossInputs:
    """What one micro-batch's loss needs besides the current policy's token log-probabilities.

    `num_tokens` is this micro-batch's share of the generation batch's completion tokens: token-level sums divided by
    it average exactly over processes and micro-batches. `old_scores` / `ref_scores` are the old and reference
    policies' scores on the same masks (None: the policy has not moved since generation / no KL term).
    """

    advantages: torch.Tensor
    completion_mask: torch.Tensor
    num_tokens: torch.Tensor | float
    old_scores: torch.Tensor | None = None
    ref_scores: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def clip_stats(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float):
    """Where PPO's clipping is active: below `1 - eps_low` with a negative advantage, above `1 + eps_high` with a
    positive one."""
    low = (ratio < 1 - eps_low) & (advantages < 0)
    high = (ratio > 1 + eps_high) & (advantages > 0)
    return low, high


class Objective:
    """A policy-gradient surrogate for masked diffusion policies. Subclasses set the class attributes and `loss`.

    Built with the run's config (a `DiPODConfig`, or any object with its fields), read at each call. Internal names
    drop the config's namespaces: `kl_beta` is GRPOConfig's `beta`, SPG's `eubo_beta` is `spg_eubo_beta`.
    """

    name: ClassVar[str]
    default_dipod_normalization: ClassVar[str]  # DiPOD's term as the paper's release averages it for this objective
    default_p_mask_prompt: ClassVar[float] = 0.0
    scores_old_policy: ClassVar[bool] = True  # a ratio to the old policy, and a KL to the reference, on shared masks
    kl_estimators: ClassVar[tuple[str, ...]] = ("k3",)
    kl_description: ClassVar[str] = "no KL term"

    def __init__(self, args, block_causal: bool = False):
        self.args = args
        self.block_causal = block_causal  # a block-diffusion policy: masks drawn block by block (`draw_block_masks`)
        if block_causal:
            self.check_block_causal()

    def check_block_causal(self) -> None:
        """Refuse what does not apply to a block-diffusion policy (SDAR, LLaDA2), saying why.

        FPO, SPG and diffu-GRPO all apply: their ELBO is the sum of the blocks' ELBOs given the clean earlier blocks
        (each block masked on its own), and d1's one-step estimate is each block fully masked given them. SPG's
        `block_random` masking is refused: it is already the model's own block-by-block factorisation.
        """
        args = self.args
        if self.draws_elbo_samples() and args.elbo_estimator in BLOCK_CAUSAL_REFUSED:
            raise ValueError(
                f"elbo_estimator={args.elbo_estimator!r} does not apply to a block-causal model: "
                f"{BLOCK_CAUSAL_REFUSED[args.elbo_estimator]}. Use 'mc', 'antithetic', 'stratified' or 'quadrature'."
            )
        if args.cfg_scale > 0:
            raise ValueError(
                "cfg_scale > 0 with a block-causal model: classifier-free guidance is not part of the SDAR / LLaDA2 "
                "samplers or training. Set cfg_scale=0."
            )

    # ---------------------------------------------------------------- config

    @classmethod
    def check_options(cls, args) -> None:
        """Check this objective's own config fields. Called for every registered objective, so that a bad value is
        refused whichever objective runs."""

    @classmethod
    def configure(cls, args) -> None:
        """Fill the defaults this objective decides and check what depends on it being the one that runs."""
        if args.dipod_normalization is None:
            args.dipod_normalization = cls.default_dipod_normalization
        if args.p_mask_prompt is None:
            args.p_mask_prompt = cls.default_p_mask_prompt
        if args.kl_estimator not in cls.kl_estimators:
            owners = " or ".join(sorted({repr(each.name) for each in _objective_classes(Objective)
                                         if args.kl_estimator in each.kl_estimators}))
            raise ValueError(
                f"kl_estimator={args.kl_estimator!r} applies to objective={owners} only (objective={cls.name!r} has "
                f"{cls.kl_description}). Remove kl_estimator or set objective={owners}."
            )
        args.check_elbo_sampling(samples_drawn=cls.draws_elbo_samples())

    @classmethod
    def draws_elbo_samples(cls) -> bool:
        """Whether `elbo_num_samples` and `elbo_estimator` decide this objective's masks."""
        return True

    # ---------------------------------------------------------------- masks and scores

    def draw(self, completion_mask: torch.Tensor, prompt_mask: torch.Tensor, generator: Generators) -> MaskDraw:
        """The masks one inner iteration scores the old, current and reference policies on: an ELBO draw."""
        return self._draw(completion_mask, prompt_mask, generator, self.args.elbo_num_samples,
                          self.args.elbo_estimator, mask_padding=False)

    def _draw(self, completion_mask, prompt_mask, generator, num_samples, estimator, mask_padding) -> MaskDraw:
        args = self.args
        return draw_masks(
            completion_mask,
            num_samples,
            estimator=estimator,
            generator=generator,
            prompt_attention_mask=prompt_mask,
            p_mask_prompt=args.p_mask_prompt,
            completion_width=args.max_completion_length,
            prompt_width=args.max_prompt_length,
            block_length=args.block_length,
            mask_padding=mask_padding,
            block_causal=self.block_causal,
        )

    def scores_on_canvas(self) -> bool:
        """Whether the masks cover the whole generation canvas, past each completion's first EOS."""
        return self.args.elbo_estimator == "block_random"

    def reduce(self, token_logps: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
        """The scores the ratio is built on, from token log-probabilities (B, K, C): here each completion's ELBO."""
        return elbo_from_token_logps(token_logps, draw).mean(dim=1)

    # ---------------------------------------------------------------- loss

    @property
    def epsilon_low(self) -> float:
        return self.args.epsilon

    @property
    def epsilon_high(self) -> float:
        return self.args.epsilon_high if self.args.epsilon_high is not None else self.args.epsilon

    @property
    def kl_beta(self) -> float:
        return self.args.beta

    def loss(self, token_logps: torch.Tensor, draw: MaskDraw, inputs: LossInputs) -> ObjectiveOutput:
        """The surrogate loss of the current policy's token log-probabilities (B, K, C) on `draw`."""
        raise NotImplementedError


def _objective_classes(cls: type) -> list[type]:
    """Every subclass of `cls`, at any depth: the objectives the registry (which imports this module) is built from."""
    return [each for sub in cls.__subclasses__() for each in (sub, *_objective_classes(sub))]


def dipod_term(
    elbo: torch.Tensor, lengths: torch.Tensor, normalization: str, num_tokens: torch.Tensor | float | None = None
) -> torch.Tensor:
    """DiPOD's on-policy ELBO term, to be subtracted from the loss with weight `dipod_beta`.

    `elbo` holds each on-policy completion's summed ELBO (or, for diffu-GRPO, its summed one-step token
    log-likelihood). `'sequence'`: the batch mean (nats per sequence). `'token'`: summed ELBOs over summed lengths
    (nats per token, each completion weighted by its length; `num_tokens` replaces the summed lengths, as in
    `diffu_grpo_loss`).
    """
    if normalization == "sequence":
        return elbo.mean()
    if normalization == "token":
        return elbo.sum() / (lengths.to(elbo.dtype).sum().clamp(min=1) if num_tokens is None else num_tokens)
    raise ValueError(f"dipod_normalization must be 'sequence' or 'token', got {normalization!r}.")

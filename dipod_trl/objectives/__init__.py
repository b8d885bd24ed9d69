"""Policy-gradient surrogates for diffusion policies, one class per objective behind a registry, and DiPOD's term.

`objective_class(name)` gives the [`Objective`] a config's `objective` names; the trainer asks it for the masks of an
inner iteration, the scores its ratio needs and the loss. The formulas are plain functions next to their class
(`fpo_loss`, `diffu_grpo_loss`, `spg_loss`, `spg_eubo_per_token`, `dipod_term`), free of trainer state so that tests
check them against independent computations. Adding an objective: one module with its `Objective` subclass, listed
in `OBJECTIVES` below (docs/adding_an_objective.md).
"""

from __future__ import annotations

from .advantages import group_relative_advantages
from .base import LossInputs, Objective, ObjectiveOutput, dipod_term
from .diffu_grpo import DiffuGRPO, diffu_grpo_loss
from .espo import ESPO, GDPO, sequence_ratio_loss
from .fpo import FPO, fpo_loss
from .spg import SPG, spg_eubo_per_token, spg_loss

OBJECTIVES: dict[str, type[Objective]] = {objective.name: objective for objective in (FPO, DiffuGRPO, SPG, ESPO, GDPO)}
DIPOD_NORMALIZATIONS = ("sequence", "token")


def objective_class(name: str) -> type[Objective]:
    """The objective registered as `name`; a clear error for any other name."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {name!r}.")
    return OBJECTIVES[name]


__all__ = [
    "DIPOD_NORMALIZATIONS",
    "OBJECTIVES",
    "FPO",
    "DiffuGRPO",
    "ESPO",
    "GDPO",
    "LossInputs",
    "Objective",
    "ObjectiveOutput",
    "SPG",
    "diffu_grpo_loss",
    "dipod_term",
    "fpo_loss",
    "sequence_ratio_loss",
    "group_relative_advantages",
    "objective_class",
    "spg_eubo_per_token",
    "spg_loss",
]

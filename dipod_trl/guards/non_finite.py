"""Non-finite numbers (NaN, +-inf): refused in configuration fields, and stopping a run that produces them.

A NaN learning rate, beta or temperature does not fail loudly by itself: it trains, logs a filtered loss and saves
NaN weights. So configs refuse them when built, and trainers stop at the first non-finite loss, gradient norm,
reward, observation or action, before the step that produced it is applied or saved; and an optimizer step that
overflows the weights themselves (finite gradients, too large a step) is caught before those weights are saved.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields

import torch


class NonFiniteError(FloatingPointError):
    """A training quantity (loss, gradient norm, reward, observation, action) is NaN or infinite."""


def _non_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value)


def check_finite_fields(config) -> None:
    """Raise a `ValueError` naming every float field of the dataclass `config` (or float in a list field) that is
    NaN or infinite."""
    problems = []
    for f in fields(config):
        value = getattr(config, f.name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(_non_finite(v) for v in values):
            problems.append(f"{f.name}={value!r}")
    if problems:
        raise ValueError(
            f"{type(config).__name__}: {', '.join(problems)}: must be finite (with NaN or inf a run trains or samples "
            "on NaN values without failing); give a finite number."
        )


def check_finite(value, quantity: str, where: str, hint: str = "") -> None:
    """Raise a `NonFiniteError` saying `where` (e.g. "step 12") `quantity` (a number or tensor) is NaN or infinite."""
    tensor = torch.as_tensor(value).detach()
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    if tensor.dim() == 0:
        what = f"{quantity} is {tensor.item()}"
    else:
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        what = (f"{quantity} has {int((~finite).sum())} non-finite value(s) of {tensor.numel()}, the first "
                f"{tensor[first].item()} at index {first[0] if len(first) == 1 else first}")
    message = f"{where}: {what}. The run stops here, before it is used or saved."
    raise NonFiniteError(f"{message} {hint}" if hint else message)


def first_non_finite_weight(model) -> str | None:
    """The name of the first weight of `model` holding NaN or inf on this process, else None (under DeepSpeed ZeRO-3
    this process's shard of each weight is what it holds)."""
    for name, param in model.named_parameters():
        local = getattr(param, "ds_tensor", param)
        if not bool(torch.isfinite(local.detach()).all()):
            return name
    return None


def check_weights_before_saving(model, where: str, hint: str = "", all_processes: bool = True) -> None:
    """Raise a `NonFiniteError` instead of saving weights that hold NaN or inf: saved, they would become the run's
    newest checkpoint (or its final model) though nothing can be trained or sampled from them. With `all_processes`
    (a checkpoint save, which every process enters) the processes agree, so none is left waiting in the save;
    without it each checks its own weights (a final `save_model` may be called on one process only)."""
    name = first_non_finite_weight(model)
    bad = name is not None
    if all_processes and torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(bad)], device=next(model.parameters()).device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = bool(flag.item())
    if bad:
        what = f"the weight {name} holds" if name else "a weight on another process holds"
        message = (f"{where}: {what} NaN or infinite values after the optimizer step. The run stops here, "
                   "before they are saved.")
        raise NonFiniteError(f"{message} {hint}" if hint else message)


def check_finite_weights(model, checkpoint: str, instead: str = "") -> None:
    """Refuse the weights just loaded from `checkpoint` when one of them is NaN or infinite: resumed, the run would
    fail at its first step and point back at this checkpoint as the good one."""
    name = first_non_finite_weight(model)
    if name is not None:
        raise ValueError(
            f"checkpoint {checkpoint} is damaged: its weight {name} holds NaN or infinite values, so resuming "
            f"from it cannot train. {instead or 'Resume from an earlier complete checkpoint of the run.'}"
        )

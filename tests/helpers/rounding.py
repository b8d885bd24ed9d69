"""Comparing against numbers recorded on another CPU: what kernel rounding can change, and what it cannot.

torch's vectorised CPU kernels (AVX2, AVX-512, the portable ones that `ATEN_CPU_CAPABILITY=default` selects) round
differently, so floats recorded on one machine differ in their last bits on another, and a generated token whose
decision was close (two logits, or two positions' confidences, within rounding) can flip. The recorded-behaviour tests
therefore compare floats within a tolerance between the rounding measured across kernel sets and the effect of a
small real change (each test's docstring gives both), and compare a generated token only where perturbing every
logit by far more than that rounding leaves it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Every logit a model returns is perturbed by up to this fraction of the largest |logit| of its forward pass (a logit
# masked out with -inf or the dtype's lowest value does not count): about 35 times the largest kernel-set difference
# of the recorded logits (2.9e-6 of the largest |logit|, tiny model, portable kernels against the recording). At 1e-3
# some recorded tokens of the LLaDA and Dream fixtures already change: the bound is not loose.
TOKEN_NOISE = 1e-4
PERTURBATIONS = 4


def stable_positions(run: Callable[[], torch.Tensor], model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens `run()` generates with `model`, and where they stay the same in `PERTURBATIONS` runs whose every
    logit is moved by uniform noise of up to `TOKEN_NOISE` x the pass's largest |logit|: the positions whose every
    decision (the token, and which positions a step commits) has a margin far above kernel rounding. A flip in one
    step changes what later steps see, so the positions after a close decision drop out too. `run` must build its own
    generators, so that every call draws the same random numbers."""
    tokens = run()
    stable = torch.ones_like(tokens, dtype=torch.bool)
    for seed in range(PERTURBATIONS):
        noise = torch.Generator().manual_seed(seed)

        def perturb(module, args, output, noise=noise):
            logits = output.logits if hasattr(output, "logits") else output[0]
            size = logits.detach().abs()
            bound = TOKEN_NOISE * size[size < torch.finfo(logits.dtype).max / 4].max()  # not a masked-out logit
            logits.add_((2 * torch.rand(logits.shape, generator=noise, dtype=torch.float64) - 1).to(logits) * bound)

        handle = model.register_forward_hook(perturb)
        try:
            stable &= run() == tokens
        finally:
            handle.remove()
    return tokens, stable

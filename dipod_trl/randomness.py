"""Random numbers that do not depend on the batch: one generator per row, draws of a fixed width.

Both the sampler (Gumbel noise, random remasking) and the likelihood estimators (mask draws) draw through these
helpers, so that a row's sample and its masks come from that row's generator alone.
"""

from __future__ import annotations

import torch

# A `torch.Generator`, None (the global RNG), or one generator per batch row.
Generators = torch.Generator | list[torch.Generator] | None

# Seeds of per-row generators are `seed * SEED_STRIDE + row index`: a prime larger than any row index, so that two
# seeds never share a row's generator.
SEED_STRIDE = 1_000_003


def random_uniform(shape, generator: Generators, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers of `shape`, drawn on the generator's device and moved to `device`.

    With a list of generators (one per row of `shape[0]`), each row is drawn from its own generator, so that a row's
    numbers do not depend on the other rows of the batch: the same prompt gets the same sample whether it is
    generated alone, in a batch, or on another process of a distributed run.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"generator: {len(generator)} generators for {shape[0]} rows.")
        rows = [torch.rand(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device) for g in generator]
        return torch.stack(rows).to(device) if rows else torch.empty(shape, dtype=dtype, device=device)
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, dtype=dtype, device=gen_device).to(device)


def generators_of_rows(generator: Generators, rows: torch.Tensor) -> Generators:
    """The generators of a subset of rows (a single generator or None stays as it is)."""
    if isinstance(generator, (list, tuple)):
        return [generator[i] for i in rows.tolist()]
    return generator

"""The estimator benchmark's own arithmetic: its exact moments agree with the estimators it measures, drawn for real.

`benchmarks/bench_elbo_variance.py` scores an estimator's masks by looking them up in a table of every mask's token
log-probabilities, and derives `mc`'s variance and the best time proposal from the same table in closed form. Here
a random table stands in for a model's (the arithmetic does not care where the numbers come from), and both are
checked against many draws of `dipod_trl.masks.draw_masks`; then part 1 runs end to end on a small demo model,
where it checks its lookup against a real forward pass itself.
"""

import argparse
import math
import os
import sys

import torch

from dipod_trl.masks import draw_masks

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_elbo_variance as bench  # noqa: E402

LENGTH = 5


def random_table(seed: int) -> torch.Tensor:
    """(2^L, L) masked tokens' log-probabilities under every mask (subset i is the bits of i, first token highest),
    depending on the mask as a model's do; 0 where a token is not masked, as `bench.subset_tables` leaves them."""
    generator = torch.Generator().manual_seed(seed)
    bits = (torch.arange(2 ** LENGTH)[:, None] >> torch.arange(LENGTH - 1, -1, -1)) & 1
    return -torch.rand(2 ** LENGTH, LENGTH, generator=generator, dtype=torch.float64) * 3 * bits


def sampled_mc(table: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    draw = draw_masks(torch.ones(draws, LENGTH, dtype=torch.long), 1, estimator="mc",
                      generator=torch.Generator().manual_seed(seed))
    return bench.looked_up(table, draw)


def test_exact_elbo_and_mc_variance_from_the_table_match_draws_of_the_real_estimator():
    table = random_table(0)
    exact = bench.exact_from_table(table)
    m2, means = bench.mc_time_moments(table)
    variance = LENGTH * float(m2.sum()) - exact ** 2
    estimates = sampled_mc(table, 40_000, seed=1)
    standard_error = math.sqrt(variance / len(estimates))
    # the sample variance's own relative standard error at n = 40,000 is about 1%; 5% cannot be rounding or luck
    print(f"exact {exact:.4f}, sampled {estimates.mean():.4f} +- {standard_error:.4f}; variance {variance:.4f} vs "
          f"sampled {estimates.var():.4f}")
    assert abs(float(estimates.mean()) - exact) < 4 * standard_error
    assert abs(float(estimates.var()) / variance - 1) < 0.05
    # the law of total variance: E[X | l] averages to the ELBO, and the time's share lies in [0, 1]
    assert math.isclose(float(means.mean()), exact, rel_tol=1e-12)
    assert 0 <= float(means.var(unbiased=False)) <= variance


def test_the_optimal_time_proposal_is_unbiased_and_has_the_variance_the_benchmark_reports():
    table = random_table(2)
    exact = bench.exact_from_table(table)
    m2, _ = bench.mc_time_moments(table)
    q = m2.sqrt() / m2.sqrt().sum()
    # draw l from q, then a uniform subset of that size (mc's draw at that size), weight 1 / (l q(l))
    generator = torch.Generator().manual_seed(3)
    sizes = torch.multinomial(q, 40_000, replacement=True, generator=generator) + 1
    ranks = torch.rand(len(sizes), LENGTH, generator=generator, dtype=torch.float64).argsort(-1).argsort(-1)
    masks = ranks < sizes[:, None]
    index = (masks.long() * (2 ** torch.arange(LENGTH - 1, -1, -1))).sum(-1)
    estimates = (table[index] * masks).sum(-1) / (sizes * q[sizes - 1])
    variance = float(m2.sqrt().sum()) ** 2 - exact ** 2
    print(f"optimal proposal: exact {exact:.4f}, sampled {estimates.mean():.4f}; variance {variance:.4f} vs sampled "
          f"{estimates.var():.4f} (mc: {LENGTH * float(m2.sum()) - exact ** 2:.4f})")
    assert abs(float(estimates.mean()) - exact) < 4 * math.sqrt(variance / len(estimates))
    assert abs(float(estimates.var()) / variance - 1) < 0.05


def test_part_one_runs_end_to_end_and_prints_every_estimator(tmp_path, capsys):
    args = argparse.Namespace(rows=2, replicates=10, directions=1, sft_dir=str(tmp_path / "sft"))
    bench.part_one(args)  # asserts that its lookup equals a forward pass on the same masks
    out = capsys.readouterr().out
    for name in bench.ESTIMATOR_NAMES:
        assert sum(line.startswith(name + " ") for line in out.splitlines()) == 2, name  # value and gradient tables
    assert "time proposal" in out

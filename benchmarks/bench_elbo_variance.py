"""Error of every ELBO estimator against the exact ELBO at equal forward passes, on values and gradients.

    python benchmarks/bench_elbo_variance.py              # part 1 in minutes; part 2 about 35 on 2 busy cores
    python benchmarks/bench_elbo_variance.py --quick      # a smoke run

Part 1, 8-token completions (the demo's masked-SFT model, as `dipod sft recipes/tiny_sft.yaml` trains it): 24
digit_sort test prompts, their greedy completions (8-token canvas; the completion is scored up to its first EOS),
and the exact ELBO by enumerating every mask. Every mask's token log-probabilities are computed once (all `2^L`
subsets of each row, one batched pass), so an estimator's draw is scored by looking its masks up: the same numbers a
forward pass on those masks gives. Per estimator and K = 2, 4, 8: the mean squared error over `--replicates`
independent estimates, as a ratio to `mc`'s at the same K (mean and median over rows), and the share of the MSE that
is squared bias. The gradient: the ELBO's derivative along `--directions` fixed random unit directions in parameter
space, by central differences in float64 (every mask's table at theta +- eps v), scored the same way against the
exact derivative.

Part 2, 64-token completions (the committed checkpoint `benchmarks/results/long_sort_sft`, greedy completions of
`--long-rows` held-out 32-digit prompts): no enumeration; the reference is a 4,096-sample `mc` estimate per row (its
standard error printed). Per estimator and K: variance over `--long-replicates` estimates as a ratio to `mc`'s, the
squared distance of their mean to the reference, and the same for the directional derivatives (float64 central
differences on identical masks). Then forward passes (sequences scored) and wall time per estimate of one batch.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time

import torch
from _common import ROOT, best_time

from dipod_trl.likelihood import MaskDraw, draw_masks, elbo, masked_token_logps
from dipod_trl.masks import ESTIMATORS

ESTIMATOR_NAMES = [name for name in ESTIMATORS if name not in ("block_random", "one_step")]
SAMPLE_COUNTS = (2, 4, 8)
LONG_SFT = os.path.join(ROOT, "benchmarks", "results", "long_sort_sft")


def demo_model(path: str):
    """The demo's masked-SFT model (`dipod_trl.commands.demo.pretrain`, the settings of recipes/tiny_sft.yaml)."""
    from transformers import AutoModel, AutoTokenizer

    from dipod_trl.commands.demo import DemoConfig, pretrain
    from dipod_trl.models import build_tiny_tokenizer

    if not os.path.exists(os.path.join(path, "config.json")):
        pretrain(DemoConfig(), build_tiny_tokenizer(), path)
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def greedy_rows(model, tokenizer, prompts, gen_length: int, block_length: int, steps: int):
    """Left-padded prompts and their greedy completions with completion masks (up to the first EOS)."""
    from dipod_trl.sampling import generate
    from dipod_trl.tasks.base import tokenize_prompt

    ids = [torch.tensor(tokenize_prompt(tokenizer, p)) for p in prompts]
    width = max(len(x) for x in ids)
    prompt_ids = torch.stack([torch.cat([torch.full((width - len(x),), tokenizer.pad_token_id), x]) for x in ids])
    attention = torch.stack([torch.cat([torch.zeros(width - len(x)), torch.ones(len(x))]).long() for x in ids])
    with torch.no_grad():
        completion_ids, completion_mask = generate(model, prompt_ids, attention, gen_length=gen_length,
                                                   block_length=block_length, steps=steps)
    return prompt_ids, attention, completion_ids, completion_mask


def perturbed(model, direction: dict, scale: float):
    """A float64 copy of `model` with its parameters moved by `scale * direction`."""
    import copy

    copy_ = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, param in copy_.named_parameters():
            param.add_(scale * direction[name].double())
    return copy_


def directions(model, count: int, seed: int = 0) -> list[dict]:
    """`count` fixed random unit directions in parameter space."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        raw = {n: torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
        norm = math.sqrt(sum(float((v ** 2).sum()) for v in raw.values()))
        out.append({n: v / norm for n, v in raw.items()})
    return out


# ---------------------------------------------------------------- part 1: enumeration on 8-token rows

def subset_tables(model, prompt_ids, attention, completion_ids, completion_mask):
    """Per row: every subset of its L completion tokens as a bit mask (2^L, L) and the masked tokens'
    log-probabilities under each (2^L, L)."""
    tables = []
    with torch.no_grad():
        for b in range(prompt_ids.shape[0]):
            length = int(completion_mask[b].sum())
            bits = torch.tensor(list(itertools.product([False, True], repeat=length)), dtype=torch.bool)
            draw = MaskDraw(bits.unsqueeze(0), torch.ones(1, len(bits)))
            logps = masked_token_logps(model, prompt_ids[b:b + 1], completion_ids[b:b + 1, :length], draw,
                                       attention_mask=attention[b:b + 1])[0]
            tables.append(logps.double())
    return tables


def exact_from_table(table: torch.Tensor) -> float:
    """The ELBO: mean over l = 1..L of E_{|M|=l}[(L/l) sum_{i in M} log p], from every subset's log-probabilities."""
    length = table.shape[1]
    bits = torch.tensor(list(itertools.product([0, 1], repeat=length)))
    sizes = bits.sum(-1)
    weight = torch.tensor([1 / (int(s) * math.comb(length, int(s))) if s else 0.0 for s in sizes], dtype=torch.float64)
    return float((weight * table.sum(-1)).sum())


def looked_up(table: torch.Tensor, draw: MaskDraw) -> torch.Tensor:
    """The estimates (R,) of a draw over R replicates of one row, its masks scored by the row's subset table."""
    masks = draw.completion_masks
    length = masks.shape[-1]
    index = (masks.long() * (2 ** torch.arange(length - 1, -1, -1))).sum(-1)
    token_logps = table[index] * masks
    weights = draw.weights.double()
    per_sample = (weights * token_logps).sum(-1) if weights.dim() == 3 else weights * token_logps.sum(-1)
    return per_sample.mean(-1)


def enumeration_errors(tables, exacts, replicates: int, seed: int) -> dict:
    """{(estimator, K): (per-row MSE, per-row squared bias)} of estimates scored on `tables`."""
    out = {}
    for k in SAMPLE_COUNTS:
        for name in ESTIMATOR_NAMES:
            mse, bias2 = [], []
            for row, (table, exact) in enumerate(zip(tables, exacts)):
                length = table.shape[1]
                draw = draw_masks(torch.ones(replicates, length, dtype=torch.long), k, estimator=name,
                                  generator=torch.Generator().manual_seed(seed * 1000 + row))
                estimates = looked_up(table, draw)
                mse.append(float(((estimates - exact) ** 2).mean()))
                bias2.append(float((estimates.mean() - exact) ** 2))
            out[name, k] = (mse, bias2)
    return out


def print_ratios(title: str, errors: dict) -> None:
    print(f"\n{title}\n{'estimator':<17}" + "".join(f"{'K=' + str(k) + ' mean':>11}{'median':>8}{'bias2':>7}"
                                                   for k in SAMPLE_COUNTS))
    for name in ESTIMATOR_NAMES:
        cells = []
        for k in SAMPLE_COUNTS:
            mse, bias2 = errors[name, k]
            ratios = [a / b for a, b in zip(mse, errors["mc", k][0])]
            cells.append(f"{statistics.mean(ratios):>11.3f}{statistics.median(ratios):>8.3f}"
                         f"{sum(bias2) / sum(mse):>7.2f}")
        print(f"{name:<17}" + "".join(cells))


def mc_time_moments(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask size l = 1..L, exactly from a row's subset table: m2(l) = E[(S/l)^2 | l] and E[X | l] = L E[S/l | l],
    with S the masked tokens' log-probability sum of a uniform subset of size l and X one `mc` sample."""
    length = table.shape[1]
    bits = torch.tensor(list(itertools.product([0, 1], repeat=length)))
    sizes, sums = bits.sum(-1), (table * bits).sum(-1)
    m2 = torch.stack([((sums[sizes == l] / l) ** 2).mean() for l in range(1, length + 1)])
    means = torch.stack([(sums[sizes == l] / l).mean() * length for l in range(1, length + 1)])
    return m2, means


def time_proposal_bound(tables, exacts) -> None:
    """What a data-driven time proposal could gain for `mc`, exactly, from every mask's log-probabilities.

    One sample with the time drawn from q is X = S(M) / (l q(l)), M a uniform subset of size l (q uniform is `mc`).
    Its second moment is sum_l m2(l) / q(l), so the best unbiased proposal is q(l) ∝ sqrt(m2(l)). Printed: the random
    time's share of `mc`'s variance (Var_l E[X | l] / Var X), the variance of that per-row optimum (an oracle: no
    running statistic can do better) and of one proposal pooled over the rows of each length (what running per-l
    statistics would learn), as ratios to `mc`'s."""
    moments = [(*mc_time_moments(table), exact) for table, exact in zip(tables, exacts)]
    time_share, oracle, pooled = [], [], []
    for m2, means, exact in moments:
        variance = len(m2) * float(m2.sum()) - exact ** 2
        time_share.append(float(means.var(unbiased=False)) / variance)
        oracle.append((float(m2.sqrt().sum()) ** 2 - exact ** 2) / variance)
        q = torch.stack([other / other.mean() for other, *_ in moments if len(other) == len(m2)]).mean(0).sqrt()
        pooled.append((float((m2 / (q / q.sum())).sum()) - exact ** 2) / variance)
    print("\ntime proposal (mc, one sample; mean / median over rows): the random time's share of the variance "
          f"{statistics.mean(time_share):.3f} / {statistics.median(time_share):.3f}; variance of the per-row optimal "
          f"proposal {statistics.mean(oracle):.3f} / {statistics.median(oracle):.3f}x mc's, of one proposal pooled "
          f"per length {statistics.mean(pooled):.3f} / {statistics.median(pooled):.3f}x")


def part_one(args) -> None:
    from dipod_trl.tasks.digit_sort import load as load_digit_sort

    model, tokenizer = demo_model(args.sft_dir)
    rows = load_digit_sort("test", num_examples=args.rows, seed=0)
    prompt_ids, attention, completion_ids, completion_mask = greedy_rows(
        model, tokenizer, [r["prompt"] for r in rows], gen_length=8, block_length=4, steps=8)
    start = time.perf_counter()
    tables = subset_tables(model, prompt_ids, attention, completion_ids, completion_mask)
    lengths = [t.shape[1] for t in tables]
    exacts = [exact_from_table(t) for t in tables]
    print(f"part 1: {args.rows} digit_sort test rows, greedy completions of {min(lengths)}-{max(lengths)} tokens "
          f"(8-token canvas), exact ELBO {statistics.mean(exacts):.3f} nats on average; every mask scored "
          f"({sum(2 ** n for n in lengths)} sequences, {time.perf_counter() - start:.0f} s)")
    # the lookup is the forward pass: check one draw against scoring it directly
    draw = draw_masks(completion_mask[:1, :lengths[0]].expand(3, -1), 4, estimator="control_variate",
                      generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = elbo(model, prompt_ids[:1].expand(3, -1), completion_ids[:1, :lengths[0]].expand(3, -1),
                      attention_mask=attention[:1].expand(3, -1), draw=draw)
    assert torch.allclose(direct.double(), looked_up(tables[0], draw), atol=1e-4), "lookup != forward pass"
    print_ratios(f"ELBO value: MSE against the exact ELBO as a ratio to mc's at the same K ({args.replicates} "
                 "replicates per row; mean and median over rows; bias2: squared bias's share of the MSE, pooled)",
                 enumeration_errors(tables, exacts, args.replicates, seed=1))
    time_proposal_bound(tables, exacts)

    eps = 1e-4
    gradient_errors = {}
    for d, direction in enumerate(directions(model, args.directions)):
        plus = subset_tables(perturbed(model, direction, eps), prompt_ids, attention, completion_ids, completion_mask)
        minus = subset_tables(perturbed(model, direction, -eps), prompt_ids, attention, completion_ids,
                              completion_mask)
        derivative_tables = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
        exact_derivatives = [exact_from_table(t) for t in derivative_tables]
        for key, (mse, bias2) in enumeration_errors(derivative_tables, exact_derivatives, args.replicates,
                                                    seed=2 + d).items():
            previous = gradient_errors.get(key, ([0.0] * len(mse), [0.0] * len(mse)))
            gradient_errors[key] = ([a + b for a, b in zip(previous[0], mse)],
                                    [a + b for a, b in zip(previous[1], bias2)])
    print_ratios(f"ELBO gradient: squared error of its projection on {args.directions} fixed random unit directions "
                 "(float64 central differences; summed over directions) against the exact one, as a ratio to mc's",
                 gradient_errors)


# ---------------------------------------------------------------- part 2: the 64-token checkpoint

def long_rows(args):
    from _long_sort import GEN_LENGTH, load_long_sort
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(LONG_SFT).eval()
    tokenizer = AutoTokenizer.from_pretrained(LONG_SFT)
    rows = load_long_sort("test", args.long_rows)
    return model, greedy_rows(model, tokenizer, [r["prompt"] for r in rows], gen_length=GEN_LENGTH,
                              block_length=16, steps=32)


def estimates(models, batch, estimator: str, k: int, replicates: int, seed: int, chunk: int) -> torch.Tensor:
    """(replicates, rows, models) estimates: each replicate a fresh draw, scored by every model on the same masks."""
    prompt_ids, attention, completion_ids, completion_mask = batch
    rows = prompt_ids.shape[0]
    repeat = lambda x: x.repeat(replicates, 1)  # noqa: E731
    draw = draw_masks(repeat(completion_mask), k, estimator=estimator, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        values = [elbo(m, repeat(prompt_ids), repeat(completion_ids), completion_mask=repeat(completion_mask),
                       attention_mask=repeat(attention), draw=draw, chunk_size=chunk).double() for m in models]
    return torch.stack(values, -1).view(replicates, rows, len(models))


def part_two(args) -> None:
    model, batch = long_rows(args)
    eps = 1e-4
    models = [model.double()]
    for direction in directions(model, args.long_directions):
        models += [perturbed(model, direction, eps), perturbed(model, direction, -eps)]
    lengths = batch[3].sum(-1).tolist()
    print(f"\npart 2: {args.long_rows} held-out 32-digit prompts, greedy completions of {min(lengths)}-{max(lengths)} "
          f"tokens, checkpoint {os.path.relpath(LONG_SFT, ROOT)}; models in float64")

    def values_and_derivatives(x):  # (..., models) -> value (..., 1) and derivatives (..., D)
        pairs = x[..., 1:].unflatten(-1, (-1, 2))
        return torch.cat([x[..., :1], (pairs[..., 0] - pairs[..., 1]) / (2 * eps)], -1)

    start = time.perf_counter()
    reference = torch.cat([values_and_derivatives(estimates(models, batch, "mc", 512, 1, 10_000 + i, args.chunk))
                           for i in range(args.reference_samples // 512)])  # (chunks, rows, 1 + D)
    ref_mean, ref_se = reference.mean(0), reference.std(0) / math.sqrt(reference.shape[0])
    print(f"reference: {args.reference_samples} mc samples per row ({time.perf_counter() - start:.0f} s); ELBO "
          f"{ref_mean[:, 0].mean():.2f} nats on average, its standard error {ref_se[:, 0].mean():.3f} (value) and "
          f"{ref_se[:, 1:].mean():.3f} (directional derivatives)")
    print(f"\nvariance as a ratio to mc's at the same K ({args.long_replicates} replicates; mean over rows) and the "
          "squared distance of the mean to the reference (bias2, nats^2; the reference's own variance is "
          f"{(ref_se[:, 0] ** 2).mean():.4f})")
    header = "".join(f"{'K=' + str(k) + ' value':>12}{'bias2':>8}{'grad':>7}" for k in SAMPLE_COUNTS)
    print(f"{'estimator':<17}{header}")
    results = {}
    for k in SAMPLE_COUNTS:
        for name in ESTIMATOR_NAMES:
            x = values_and_derivatives(estimates(models, batch, name, k, args.long_replicates, k, args.chunk))
            results[name, k] = x.var(0), (x.mean(0) - ref_mean) ** 2
    for name in ESTIMATOR_NAMES:
        cells = []
        for k in SAMPLE_COUNTS:
            var, bias2 = results[name, k]
            mc_var = results["mc", k][0]
            cells.append(f"{float((var[:, 0] / mc_var[:, 0]).mean()):>12.3f}{float(bias2[:, 0].mean()):>8.3f}"
                         f"{float((var[:, 1:] / mc_var[:, 1:]).mean()):>7.3f}")
        print(f"{name:<17}" + "".join(cells))

    prompt_ids, attention, completion_ids, completion_mask = batch
    model = model.float()
    print(f"\nforward passes (sequences scored) and wall time per estimate of the {args.long_rows} rows (float32, "
          "best of 3)")
    print(f"{'estimator':<17}" + "".join(f"{'K=' + str(k) + ' passes':>14}{'ms':>8}" for k in SAMPLE_COUNTS))
    for name in ESTIMATOR_NAMES:
        cells = []
        for k in SAMPLE_COUNTS:
            def run(k=k, name=name):
                draw = draw_masks(completion_mask, k, estimator=name, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    elbo(model, prompt_ids, completion_ids, completion_mask=completion_mask, attention_mask=attention,
                         draw=draw)
                return draw
            seconds, draw = best_time(run)
            cells.append(f"{draw.completion_masks.shape[0] * k:>14d}{1000 * seconds:>8.1f}")
        print(f"{name:<17}" + "".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--long-rows", type=int, default=2)
    parser.add_argument("--long-replicates", type=int, default=32)
    parser.add_argument("--long-directions", type=int, default=1)
    parser.add_argument("--reference-samples", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=512, help="rows per forward pass (memory flat in K)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--sft-dir", default=os.path.join(ROOT, "outputs", "bench_elbo_variance", "sft"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rows, replicates and samples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.replicates, args.directions = 3, 20, 1
        args.long_rows, args.long_replicates, args.long_directions, args.reference_samples = 1, 4, 1, 1024
    torch.set_num_threads(args.threads)
    print(f"estimators: {', '.join(ESTIMATOR_NAMES)}; CPU, {torch.get_num_threads()} torch thread(s)")
    if 1 in args.parts:
        part_one(args)
    if 2 in args.parts:
        part_two(args)


if __name__ == "__main__":
    main()

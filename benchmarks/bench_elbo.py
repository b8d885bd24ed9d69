"""Batched Monte-Carlo ELBO (`dipod_trl.elbo`) vs a plain loop over rows and samples, on identical masks.

    python benchmarks/bench_elbo.py [--batch-size 16] [--num-samples 8] [--repeats 3]

The demo's tiny model, 16 completions of 8-32 tokens after prompts of different lengths, K masks each, the same
`MaskDraw` for both implementations (so the outputs must agree). Both run in this process, one after the other.
"""

import argparse

import torch
from _common import best_time, digit_sort_prompts, tiny_model

import dipod_trl
from dipod_trl.likelihood import draw_masks


def per_row_elbo(model, prompt_ids, attention_mask, completion_ids, completion_mask, draw):
    """One forward pass per (row, sample): mask, score the masked tokens, weight, average."""
    mask_id = model.config.mask_token_id
    values = []
    for b in range(prompt_ids.shape[0]):
        prompt = prompt_ids[b][attention_mask[b].bool()]
        completion = completion_ids[b][completion_mask[b].bool()]
        total = 0.0
        for k in range(draw.num_samples):
            masked = draw.completion_masks[b, k, : len(completion)]
            noisy = torch.where(masked, torch.full_like(completion, mask_id), completion)
            logits = model(torch.cat([prompt, noisy]).unsqueeze(0)).logits[0, len(prompt):]
            logps = logits.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
            total = total + draw.weights[b, k] * logps[masked].sum()
        values.append(total / draw.num_samples)
    return torch.stack(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = tiny_model()
    prompt_ids, attention_mask = digit_sort_prompts(tokenizer, args.batch_size)
    generator = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(11, 100, (args.batch_size, 32), generator=generator)
    lengths = torch.randint(8, 33, (args.batch_size, 1), generator=generator)
    completion_mask = (torch.arange(32).unsqueeze(0) < lengths).long()
    draw = draw_masks(completion_mask, args.num_samples, estimator="antithetic", generator=generator)

    with torch.no_grad():
        t_batched, batched = best_time(lambda: dipod_trl.elbo(
            model, prompt_ids, completion_ids, completion_mask=completion_mask, attention_mask=attention_mask,
            draw=draw), args.repeats)
        t_row, per_row = best_time(lambda: per_row_elbo(
            model, prompt_ids, attention_mask, completion_ids, completion_mask, draw), args.repeats)
    identical = torch.allclose(batched, per_row, atol=1e-3, rtol=1e-5)
    print(f"dipod_trl.elbo vs a loop over rows and samples; batch {args.batch_size}, K={args.num_samples} "
          f"(antithetic), completions of 8-32 tokens; CPU, {torch.get_num_threads()} torch threads")
    print(f"{'implementation':<28}{'seconds':>10}{'sequences/s':>14}")
    print(f"{'per-row, per-sample loop':<28}{t_row:>10.3f}{args.batch_size / t_row:>14.1f}")
    print(f"{'dipod_trl.elbo':<28}{t_batched:>10.3f}{args.batch_size / t_batched:>14.1f}")
    print(f"speed-up: {t_row / t_batched:.1f}x   same values (atol 1e-3 nats): {identical}   "
          f"max |difference| {(batched - per_row).abs().max().item():.1e} nats")
    if not identical:
        raise SystemExit("outputs differ: the comparison is void")


if __name__ == "__main__":
    main()

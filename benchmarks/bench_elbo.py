"""Batched Monte-Carlo ELBO vs a plain loop over rows and samples, on identical masks (identical outputs).

    python benchmarks/bench_elbo.py [--batch-size 16] [--num-samples 8] [--completion-length 32]

Both run in this process on the CPU, one after the other, on the tiny model at the demo's size.
"""

import argparse

import torch

from _common import best_time, tiny_model_and_prompts

import dipod_trl
from dipod_trl.likelihood import draw_masks


def per_row_elbo(model, prompt_ids, attention_mask, completion_ids, draw):
    """One forward pass per (row, sample): mask, score the masked tokens, weight, average."""
    mask_id = model.config.mask_token_id
    values = []
    for b in range(prompt_ids.shape[0]):
        prompt = prompt_ids[b][attention_mask[b].bool()]
        total = 0.0
        for k in range(draw.num_samples):
            masked = draw.completion_masks[b, k]
            noisy = torch.where(masked, torch.full_like(completion_ids[b], mask_id), completion_ids[b])
            logits = model(torch.cat([prompt, noisy]).unsqueeze(0)).logits[0, len(prompt):]
            logps = logits.log_softmax(-1).gather(-1, completion_ids[b].unsqueeze(-1)).squeeze(-1)
            total = total + draw.weights[b, k] * logps[masked].sum()
        values.append(total / draw.num_samples)
    return torch.stack(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps the comparison steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _, prompt_ids, attention_mask = tiny_model_and_prompts(args.batch_size)
    generator = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(10, 100, (args.batch_size, args.completion_length), generator=generator)
    draw = draw_masks(torch.ones_like(completion_ids), args.num_samples, generator=generator)

    with torch.no_grad():
        t_batched, batched = best_time(
            lambda: dipod_trl.elbo(model, prompt_ids, completion_ids, attention_mask=attention_mask, draw=draw)
        )
        t_row, per_row = best_time(lambda: per_row_elbo(model, prompt_ids, attention_mask, completion_ids, draw))
    identical = torch.allclose(batched, per_row, atol=1e-3, rtol=1e-5)
    print(f"tiny model, batch {args.batch_size}, K={args.num_samples} samples, completion length "
          f"{args.completion_length}, {torch.get_num_threads()} thread(s), CPU")
    print(f"{'implementation':<28}{'seconds':>10}{'sequences/s':>14}")
    print(f"{'per-row, per-sample loop':<28}{t_row:>10.3f}{args.batch_size / t_row:>14.1f}")
    print(f"{'dipod_trl.elbo':<28}{t_batched:>10.3f}{args.batch_size / t_batched:>14.1f}")
    print(f"speed-up: {t_row / t_batched:.1f}x   identical outputs (atol 1e-3 nats): {identical}  "
          f"max |diff| {(batched - per_row).abs().max().item():.2e}")
    if not identical:
        raise SystemExit("outputs differ: the comparison is void")


if __name__ == "__main__":
    main()

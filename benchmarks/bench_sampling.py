"""Batched masked-diffusion sampling vs a plain one-row-at-a-time sampler, at identical (greedy) outputs.

    python benchmarks/bench_sampling.py [--batch-size 16] [--gen-length 32] [--block-length 8] [--steps 32]

Both run in this process on the CPU, one after the other, on the tiny model at the demo's size.
"""

import argparse

import torch

from _common import best_time, tiny_model_and_prompts

import dipod_trl
from tests.test_sampling import reference_generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps the comparison steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _, prompt_ids, attention_mask = tiny_model_and_prompts(args.batch_size)
    schedule = dict(gen_length=args.gen_length, block_length=args.block_length, steps=args.steps)

    def batched():
        return dipod_trl.generate(model, prompt_ids, attention_mask, **schedule, eos_token_ids=[])[0]

    def per_row():
        rows = []
        for ids, mask in zip(prompt_ids, attention_mask):
            prompt = ids[mask.bool()]
            rows.append(reference_generate(model, prompt, **schedule, remasking="low_confidence",
                                           mask_id=model.config.mask_token_id))
        return torch.stack(rows)

    with torch.no_grad():
        t_batched, out_batched = best_time(batched)
        t_row, out_row = best_time(per_row)
    identical = torch.equal(out_batched, out_row)
    print(f"tiny model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), batch {args.batch_size}, "
          f"gen_length {args.gen_length}, block {args.block_length}, steps {args.steps}, "
          f"{torch.get_num_threads()} thread(s), CPU")
    print(f"{'implementation':<28}{'seconds':>10}{'completions/s':>16}")
    print(f"{'per-row reference':<28}{t_row:>10.3f}{args.batch_size / t_row:>16.1f}")
    print(f"{'dipod_trl.generate':<28}{t_batched:>10.3f}{args.batch_size / t_batched:>16.1f}")
    print(f"speed-up: {t_row / t_batched:.1f}x   identical outputs: {identical}")
    if not identical:
        raise SystemExit("outputs differ: the comparison is void")


if __name__ == "__main__":
    main()

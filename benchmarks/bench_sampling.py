"""Batched masked-diffusion sampling (`dipod_trl.generate`) vs a plain one-row-at-a-time sampler, same outputs.

    python benchmarks/bench_sampling.py [--batch-size 16] [--repeats 3]

Two settings, both on the demo's tiny model, batch 16 with prompts of different lengths, greedy decoding:
1. untrained model, 32-token canvas in blocks of 8, 32 steps: batching alone;
2. the model after a short masked SFT on digit_sort (answers of 3-8 tokens), 32-token canvas: rows also leave the
   batch once their completion is final (first EOS with nothing masked before it); the per-row reference denoises
   the whole canvas, as LLaDA's sampler does. Completions are compared up to and including the first EOS.
Both implementations run in this process, one after the other.
"""

import argparse

import torch
from _common import best_time, digit_sort_prompts, tiny_model

import dipod_trl
from dipod_trl.sampling import completion_mask_from_eos
from tests.test_sampling import reference_generate


def compare(model, tokenizer, prompt_ids, attention_mask, schedule, eos_ids, repeats):
    def batched():
        ids, mask = dipod_trl.generate(model, prompt_ids, attention_mask, **schedule, eos_token_ids=eos_ids)
        return ids * mask

    def per_row():
        rows = [reference_generate(model, ids[mask.bool()], **schedule, remasking="low_confidence",
                                   mask_id=model.config.mask_token_id)
                for ids, mask in zip(prompt_ids, attention_mask)]
        ids = torch.stack(rows)
        return ids * completion_mask_from_eos(ids, eos_ids)

    with torch.no_grad():
        t_batched, out_batched = best_time(batched, repeats)
        t_row, out_row = best_time(per_row, repeats)
    return t_row, t_batched, torch.equal(out_batched, out_row)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    schedule = dict(gen_length=32, block_length=8, steps=32)
    print(f"dipod_trl.generate vs a one-row-at-a-time LLaDA-style sampler; batch {args.batch_size}, canvas 32, "
          f"blocks of 8, 32 steps, greedy; CPU, {torch.get_num_threads()} torch threads")
    print(f"{'setting':<44}{'per-row s':>11}{'batched s':>11}{'speed-up':>10}{'identical':>11}")
    results = []
    for label, sft_steps, eos in (("untrained model (no early stop)", 0, []),
                                  ("after masked SFT, rows stop at EOS", 150, None)):
        model, tokenizer = tiny_model(sft_steps)
        prompt_ids, attention_mask = digit_sort_prompts(tokenizer, args.batch_size)
        eos_ids = [tokenizer.eos_token_id] if eos is None else eos
        t_row, t_batched, identical = compare(model, tokenizer, prompt_ids, attention_mask, schedule, eos_ids,
                                              args.repeats)
        results.append(identical)
        print(f"{label:<44}{t_row:>11.3f}{t_batched:>11.3f}{t_row / t_batched:>9.1f}x{str(identical):>11}")
    if not all(results):
        raise SystemExit("outputs differ: the comparison is void")


if __name__ == "__main__":
    main()

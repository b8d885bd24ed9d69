"""Fast decoding (block KV cache, confidence-threshold parallel decoding) vs exact decoding: time, forwards, accuracy.

    python benchmarks/bench_fast_sampling.py [--num-examples 256] [--batch-size 64] [--threshold 0.9]

The tiny model is first taught a long-completion variant of the demo task by masked SFT (sort 32 digits, answer
written with spaces: 64 tokens with EOS, in blocks of 16; see `_long_sort.py`; the checkpoint is cached in
outputs/long_sort_sft). Then every mode decodes the same held-out prompts greedily, one token per step (64 steps, the
setting Fast-dLLM compares against), batch by batch, the modes taking turns on each batch so that they share the
machine's load. Reported per mode: seconds per generation batch, model forwards per batch and the positions they
recompute, task accuracy (exact match and per-character), the share of completions identical to exact decoding,
and the speed-up over exact decoding.
"""

import argparse
import json
import os
import time

import torch
from _long_sort import DEFAULT_SFT_DIR, GEN_LENGTH, digit_accuracy, exact_match, load_long_sort, sft_model
from trl.trainer.utils import pad

import dipod_trl
from dipod_trl.tasks import tokenize_prompt


def modes(threshold: float) -> dict[str, dict]:
    return {
        "exact": {},
        "prefix": {"kv_cache": "prefix"},
        "dual": {"kv_cache": "dual"},
        f"threshold {threshold}": {"confidence_threshold": threshold},
        f"dual + threshold {threshold}": {"kv_cache": "dual", "confidence_threshold": threshold},
    }


def batches(tokenizer, data, batch_size):
    for start in range(0, len(data), batch_size):
        rows = data.select(range(start, min(start + batch_size, len(data))))
        ids = [torch.tensor(tokenize_prompt(tokenizer, p)) for p in rows["prompt"]]
        yield pad(ids, tokenizer.pad_token_id, "left"), pad([torch.ones_like(i) for i in ids], 0, "left")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=GEN_LENGTH)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--sft-dir", default=DEFAULT_SFT_DIR)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--output", default=os.path.join("outputs", "bench_fast_sampling.json"))
    args = parser.parse_args()

    start = time.perf_counter()
    model, tokenizer = sft_model(args.sft_dir, steps=args.sft_steps, threads=torch.get_num_threads())
    print(f"model: tiny (2 layers, width 64) after {args.sft_steps} masked-SFT steps ({args.sft_dir}; "
          f"{time.perf_counter() - start:.0f} s to train or load)")
    test = load_long_sort("test", args.num_examples)
    schedule = dict(gen_length=GEN_LENGTH, block_length=args.block_length, steps=args.steps)
    results = {name: {"seconds": [], "forwards": [], "positions": [], "texts": []} for name in modes(args.threshold)}
    with torch.no_grad():
        for prompt_ids, attention in batches(tokenizer, test, args.batch_size):
            for name, fast in modes(args.threshold).items():
                begin = time.perf_counter()
                ids, mask, stats = dipod_trl.generate(model, prompt_ids, attention, **schedule, **fast,
                                                      return_stats=True)
                results[name]["seconds"].append(time.perf_counter() - begin)
                results[name]["forwards"].append(stats.forwards)
                results[name]["positions"].append(stats.positions)
                results[name]["texts"] += tokenizer.batch_decode([i[m.bool()] for i, m in zip(ids, mask)],
                                                                 skip_special_tokens=True)

    answers = test["answer"]
    exact_texts = results["exact"]["texts"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    base_time = mean(results["exact"]["seconds"])
    print(f"\n{len(test)} held-out prompts, batches of {args.batch_size}, canvas {GEN_LENGTH} in blocks of "
          f"{args.block_length}, {args.steps} steps, greedy; CPU, {torch.get_num_threads()} torch threads\n")
    header = (f"{'mode':<24}{'s/batch':>9}{'speed-up':>9}{'forwards':>9}{'positions':>11}{'exact acc':>10}"
              f"{'char acc':>9}{'= exact':>8}")
    print(header)
    summary = {"config": vars(args), "modes": {}}
    for name, r in results.items():
        row = {
            "seconds_per_batch": mean(r["seconds"]),
            "speedup": base_time / mean(r["seconds"]),
            "forwards_per_batch": mean(r["forwards"]),
            "positions_per_batch": mean(r["positions"]),
            "exact_match_accuracy": mean(exact_match(r["texts"], answers)),
            "char_accuracy": mean(digit_accuracy(r["texts"], answers)),
            "identical_to_exact": mean([a == b for a, b in zip(r["texts"], exact_texts)]),
        }
        summary["modes"][name] = row
        print(f"{name:<24}{row['seconds_per_batch']:>9.2f}{row['speedup']:>8.1f}x{row['forwards_per_batch']:>9.1f}"
              f"{row['positions_per_batch']:>11.0f}{row['exact_match_accuracy']:>10.3f}{row['char_accuracy']:>9.3f}"
              f"{row['identical_to_exact']:>8.2f}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()

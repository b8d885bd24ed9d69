"""Block-diffusion rollouts: the exact cache of committed blocks vs recomputing every earlier block at each step.

    python benchmarks/bench_block_sampling.py [--gen-length 256] [--block-length 4] [--steps-per-block 4]

A tiny SDAR-shaped model (SDAR's Qwen3 layers: grouped-query attention with QK norm, SwiGLU; 2 layers, width 64, a
random init) generates `--gen-length` tokens greedily for a left-padded batch of prompts, block by block as SDAR's
sampler does. "cache": the prompt's whole blocks are prefilled once, each committed block's keys/values are appended
once, and a step computes the current block only (dipod_trl.generate). "recompute": each step runs the whole prefix
under the block-causal mask (LLaDA2's published `generate` decodes this way). The two take turns, best of
`--repeats` each, and must give identical tokens (asserted). Printed: seconds, forwards and recomputed positions per
generation, and the speed-up.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dipod_trl.models import SDARConfig, SDARForCausalLM, as_diffusion_lm  # noqa: E402
from dipod_trl.sampling import GenerationStats  # noqa: E402
from dipod_trl.sampling.blocks import generate_blocks  # noqa: E402


def tiny_sdar(vocab_size: int = 512) -> SDARForCausalLM:
    torch.manual_seed(0)
    config = SDARConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                        mask_token_id=vocab_size - 1, eos_token_id=vocab_size - 2, pad_token_id=vocab_size - 2,
                        bos_token_id=None, initializer_range=0.3)
    return SDARForCausalLM(config).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=4)
    parser.add_argument("--steps-per-block", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = tiny_sdar()
    lm = as_diffusion_lm(model)
    generator = torch.Generator().manual_seed(0)
    lengths = [args.prompt_length - 5 * row for row in range(args.batch_size)]  # left padding, partial blocks
    ids = torch.full((args.batch_size, args.prompt_length), model.config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, -length:] = torch.randint(0, model.config.vocab_size - 2, (length,), generator=generator)
        mask[row, -length:] = 1

    def run(use_cache):
        stats = GenerationStats()
        start = time.perf_counter()
        with torch.no_grad():
            out = generate_blocks(lm, ids, mask, gen_length=args.gen_length, block_length=args.block_length,
                                  steps_per_block=args.steps_per_block, eos_token_ids=(), use_cache=use_cache,
                                  stats=stats)
        return time.perf_counter() - start, out, stats

    best = {True: float("inf"), False: float("inf")}
    results = {}
    for _ in range(args.repeats):
        for use_cache in (True, False):  # taking turns, so that both share the machine's load
            seconds, out, stats = run(use_cache)
            best[use_cache] = min(best[use_cache], seconds)
            results[use_cache] = out, stats
    (cached, cached_stats), (recomputed, recomputed_stats) = results[True], results[False]
    assert torch.equal(cached[0], recomputed[0]) and torch.equal(cached[1], recomputed[1]), "tokens differ"

    print(f"tiny SDAR-shaped model (2 layers, width 64), batch {args.batch_size}, prompts of {min(lengths)}-"
          f"{max(lengths)} tokens, {args.gen_length} tokens in blocks of {args.block_length}, "
          f"{args.steps_per_block} steps per block, greedy; torch threads {torch.get_num_threads()}")
    print(f"{'mode':<10} {'seconds':>8} {'forwards':>9} {'positions':>10}")
    for name, seconds, stats in (("cache", best[True], cached_stats), ("recompute", best[False], recomputed_stats)):
        print(f"{name:<10} {seconds:>8.2f} {stats.forwards:>9} {stats.positions:>10}")
    print(f"tokens identical: yes ({cached[1].sum().item()} tokens); speed-up of the cache: "
          f"{best[False] / best[True]:.1f}x")


if __name__ == "__main__":
    main()

"""Block-causal ELBO in one `[noisy ‖ clean]` forward (`dipod_trl.likelihood`) vs a per-block loop, identical masks.

    python benchmarks/bench_block_elbo.py [--batch-size 8] [--num-samples 4] [--lengths 32 64 128] [--repeats 3]

The tiny block-diffusion model (`build_tiny_model(tokenizer, block_causal=True)`, blocks of 4 tokens) scores
completions of each length after left-padded prompts of different lengths, K masks each, drawn block by block. The
per-block loop runs one forward per block (batched over rows and samples): the prompt and the completion up to that
block's end, the block's masked tokens replaced by the mask token, under a block-causal mask; it is what scoring costs
without the training mask. Both run in this process, one after the other, and must give the same token
log-probabilities.
"""

import argparse

import torch
from _common import best_time, digit_sort_prompts

from dipod_trl.likelihood import draw_masks, masked_token_logps
from dipod_trl.masks import completion_block_slots
from dipod_trl.models import build_tiny_model, build_tiny_tokenizer
from dipod_trl.models.block_mask import block_ids
from dipod_trl.models.protocol import padded_positions


def block_causal_mask(attention_mask, block_length):
    """(batch, 1, T, T): a query attends the real keys of its own block and of the earlier ones (blocks from each
    row's first real token), and its own key."""
    blocks = block_ids(attention_mask, block_length)
    keep = (blocks[:, None, :] <= blocks[:, :, None]) & attention_mask.bool()[:, None, :]
    return (keep | torch.eye(attention_mask.shape[1], dtype=torch.bool)).unsqueeze(1)


def per_block_loop(model, prompt_ids, attention_mask, completion_ids, completion_mask, draw, block_length):
    """Token log-probabilities (B, K, C) of the draw's masked tokens, one forward per block of the completion."""
    batch, num_samples, length = draw.completion_masks.shape
    prompt_length = prompt_ids.shape[1]
    slots = completion_block_slots(attention_mask, length, block_length)  # (B, C)
    rows = lambda t: t.unsqueeze(1).expand(-1, num_samples, -1).reshape(batch * num_samples, -1)  # noqa: E731
    prompt, completion, slots_flat = rows(prompt_ids), rows(completion_ids), rows(slots)
    keys = rows(torch.cat([attention_mask, completion_mask], dim=-1))
    masked = draw.completion_masks.reshape(batch * num_samples, length)
    out = torch.zeros(batch * num_samples, length)
    for slot in range(int(slots.max()) + 1):
        in_block = slots_flat == slot
        end = int(in_block.nonzero()[:, 1].max()) + 1  # the block's last column in any row
        noisy = completion.masked_fill(masked & in_block, model.config.mask_token_id)
        ids = torch.cat([prompt, noisy], dim=-1)[:, : prompt_length + end]
        attention = keys[:, : prompt_length + end]
        logits = model(ids, attention_mask=block_causal_mask(attention, block_length),
                       position_ids=padded_positions(attention)).logits[:, prompt_length:]
        logps = logits.log_softmax(-1).gather(-1, completion[:, :end].unsqueeze(-1)).squeeze(-1)
        scored = (masked & in_block)[:, :end]
        out[:, :end] += logps.masked_fill(~scored, 0.0)
    return out.view(batch, num_samples, length)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, block_causal=True, max_position_embeddings=512).eval()
    block = model.diffusion_traits.default_block_length
    prompt_ids, attention_mask = digit_sort_prompts(tokenizer, args.batch_size)
    print(f"block-causal ELBO, one [noisy ‖ clean] forward vs one forward per block; tiny block model (blocks of "
          f"{block}), batch {args.batch_size}, K={args.num_samples}, prompts of {prompt_ids.shape[1]} columns; CPU, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'completion':>10}{'blocks':>8}{'loop s':>10}{'one pass s':>12}{'speed-up':>10}{'max |diff|':>12}")
    for length in args.lengths:
        compare(model, prompt_ids, attention_mask, length, block, args)


def compare(model, prompt_ids, attention_mask, length, block, args):
    """Time both implementations on random completions of `length` tokens and print one row of the table."""
    generator = torch.Generator().manual_seed(length)
    completion_ids = torch.randint(11, 100, (args.batch_size, length), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    draw = draw_masks(completion_mask, args.num_samples, generator=generator, prompt_attention_mask=attention_mask,
                      block_length=block, block_causal=True)
    with torch.no_grad():
        t_one, one_pass = best_time(lambda: masked_token_logps(
            model, prompt_ids, completion_ids, draw, completion_mask=completion_mask, attention_mask=attention_mask,
            block_length=block), args.repeats)
        t_loop, loop = best_time(lambda: per_block_loop(
            model, prompt_ids, attention_mask, completion_ids, completion_mask, draw, block), args.repeats)
    difference = (one_pass - loop).abs().max().item()
    blocks = int(completion_block_slots(attention_mask, length, block).max()) + 1
    print(f"{length:>10}{blocks:>8}{t_loop:>10.3f}{t_one:>12.3f}{t_loop / t_one:>9.1f}x{difference:>12.1e}")
    if difference > 1e-4:
        raise SystemExit("outputs differ: the comparison is void")

if __name__ == "__main__":
    main()

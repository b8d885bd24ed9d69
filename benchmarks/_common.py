"""Shared set-up for the benchmarks: the tiny model at the demo's size, prompts, and a timer."""

import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks reuse the tests' plain reference implementations

from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer  # noqa: E402


def tiny_model_and_prompts(batch_size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    config = TinyMDLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=256,
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = TinyMDLMForMaskedDiffusion(config).eval()
    texts = [f"What is {i} + {3 * i + 1}?" + " Think." * (i % 4) for i in range(batch_size)]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    return model, tokenizer, batch["input_ids"], batch["attention_mask"]


def best_time(fn, repeats: int = 3) -> tuple[float, object]:
    """Best wall time of `repeats` runs (the least disturbed by other processes) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result

"""Shared set-up for the benchmarks: the demo's tiny model (optionally after a short masked SFT), prompts, a timer."""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks reuse the tests' plain reference implementations

from dipod_trl.models import build_tiny_model, build_tiny_tokenizer  # noqa: E402


def digit_sort_prompts(tokenizer, batch_size: int, seed: int = 0):
    """`batch_size` left-padded digit_sort prompts of different lengths (3 to 7 digits)."""
    import random

    rng = random.Random(seed)
    texts = ["sort: " + "".join(rng.choice("0123456789") for _ in range(3 + i % 5)) for i in range(batch_size)]
    batch = tokenizer.apply_chat_template([[{"role": "user", "content": t}] for t in texts],
                                          add_generation_prompt=True, return_dict=True, return_tensors="pt",
                                          padding=True)
    return batch["input_ids"], batch["attention_mask"]


def tiny_model(sft_steps: int = 0):
    """The demo's tiny model; with `sft_steps`, first taught digit_sort by masked SFT (so that it ends with EOS)."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    if sft_steps:
        import datasets
        from transformers.trainer_callback import PrinterCallback
        from transformers.utils import logging

        from dipod_trl.sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig
        from dipod_trl.tasks.digit_sort import load as load_digit_sort

        logging.disable_progress_bar()
        datasets.disable_progress_bars()
        data = load_digit_sort("train", num_examples=sft_steps * 64).map(lambda r: {"completion": r["answer"]})
        args = MaskedSFTConfig(output_dir="/tmp/dipod-bench-sft", max_steps=sft_steps, per_device_train_batch_size=64,
                               learning_rate=3e-3, warmup_steps=20, save_strategy="no", report_to="none",
                               disable_tqdm=True, logging_strategy="no", max_completion_length=8)
        trainer = MaskedDiffusionSFTTrainer(model, args, train_dataset=data, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return model.eval(), tokenizer


def best_time(fn, repeats: int = 3) -> tuple[float, object]:
    """Best wall time of `repeats` runs (the least disturbed by other processes) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result

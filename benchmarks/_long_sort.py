"""A long-completion variant of the demo task for fast-decoding measurements: sort 32 digits, answer spaced out.

    prompt: "sort: 31415926..." (32 digits)       completion: "1 1 2 3 4 5 6 9 ..." (63 characters) + EOS = 64 tokens

so a 64-token canvas is filled completely, over several blocks. The tiny model is taught the task by a few minutes
of masked SFT on a CPU; the checkpoint is cached under `outputs/` so that the benchmark and the RL comparison start
from the same weights.
"""

import os
import random

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from dipod_trl.tasks import make_conversational_prompt, split_of

NUM_DIGITS = 32
GEN_LENGTH = 2 * NUM_DIGITS  # 63 characters and EOS
DEFAULT_SFT_DIR = os.path.join(ROOT, "outputs", "long_sort_sft")


def load_long_sort(split: str, num_examples: int, seed: int = 0):
    """Rows with `prompt` (conversational), `answer` (spaced sorted digits) and `completion` (= answer, for SFT)."""
    from datasets import Dataset

    rng = random.Random(f"long_sort-{split}-{seed}")
    rows = []
    while len(rows) < num_examples:
        digits = "".join(rng.choice("0123456789") for _ in range(NUM_DIGITS))
        if split_of(digits) == split:  # the demo's hash split: train and test are disjoint
            answer = " ".join(sorted(digits))
            rows.append({"prompt": make_conversational_prompt(f"sort: {digits}", None), "answer": answer,
                         "completion": answer})
    return Dataset.from_list(rows)


def digit_accuracy(completions, answer, **kwargs) -> list[float]:
    """Fraction of the answer's characters the completion gets right, position by position (partial credit, so
    that RL has a signal on a task whose exact-match rate is low)."""
    scores = []
    for completion, reference in zip(completions, answer):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        text = text.strip()
        scores.append(sum(a == b for a, b in zip(text, reference)) / len(reference))
    return scores


def exact_match(completions, answer, **kwargs) -> list[float]:
    return [float((c if isinstance(c, str) else c[-1]["content"]).strip() == a) for c, a in zip(completions, answer)]


def sft_model(path: str = DEFAULT_SFT_DIR, steps: int = 400, threads: int = 1):
    """The tiny model after masked SFT on the long task: loaded from `path` if it is there, else trained and saved."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    from dipod_trl.models import build_tiny_model, build_tiny_tokenizer
    from dipod_trl.sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig

    if os.path.exists(os.path.join(path, "config.json")):
        return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    torch.set_num_threads(threads)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, max_position_embeddings=128)
    data = load_long_sort("train", num_examples=steps * 64, seed=0)
    args = MaskedSFTConfig(output_dir=path, max_steps=steps, per_device_train_batch_size=64, learning_rate=3e-3,
                           lr_scheduler_type="cosine", warmup_steps=50, max_grad_norm=1.0, save_strategy="no",
                           report_to="none", logging_steps=50, seed=0, max_completion_length=GEN_LENGTH,
                           disable_tqdm=True)
    trainer = MaskedDiffusionSFTTrainer(model, args, train_dataset=data, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(path)
    tokenizer.save_pretrained(path)
    return model.eval(), tokenizer

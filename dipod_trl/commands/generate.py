"""`dipod generate --model DIR --prompt TEXT [TEXT ...]`: completions of a few prompts, printed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..guards.non_finite import check_finite_fields
from ..options import FastDecodingArguments, SamplerArguments
from .model_setup import DTYPE_HELP


@dataclass
class GenerateArguments(SamplerArguments):
    """Arguments of `dipod generate` (the sampler's shared options: `SamplerArguments`)."""

    model: str = field(metadata={"help": "Model directory or hub id."})
    prompt: list[str] = field(metadata={"help": "One or more prompts."})
    chat: bool = field(default=True, metadata={"help": "Wrap each prompt as a user message in the chat template."})
    gen_length: int = field(default=64, metadata={"help": "Completion length."})
    steps: int = field(default=64, metadata={"help": "Denoising steps."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship modeling code."})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})

    def __post_init__(self):
        check_finite_fields(self)
        self.check_sampler()


def print_completions(args: GenerateArguments, fast: FastDecodingArguments) -> list[str]:
    """Load the model, sample a completion of each prompt, print and return them."""
    from ..sampling import generate
    from .model_setup import check_dtype, load_for_inference

    check_dtype(args.dtype)
    model, tokenizer = load_for_inference(args.model, args.trust_remote_code, dtype=args.dtype)
    if args.chat:
        batch = tokenizer.apply_chat_template([[{"role": "user", "content": p}] for p in args.prompt],
                                              add_generation_prompt=True, return_dict=True, return_tensors="pt",
                                              padding=True)
    else:
        batch = tokenizer(args.prompt, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    ids, mask = generate(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), tokenizer=tokenizer,
                         gen_length=args.gen_length, steps=args.steps, **args.sampler_options(),
                         **fast.fast_decoding())
    texts = tokenizer.batch_decode([i[m.bool()] for i, m in zip(ids, mask)], skip_special_tokens=True)
    for prompt, text in zip(args.prompt, texts):
        print(f">>> {prompt}\n{text}\n")
    return texts

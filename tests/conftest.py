"""Fixtures shared by the test modules; the helpers they build on are in tests/helpers/ (models and tokenizers,
trainers, servers, processes, exploits)."""

import pytest
import torch

from dipod_trl.models import build_tiny_tokenizer
from tests.helpers.models import make_tiny_model, masked_batch_logits, save_tiny_reward_model


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    """The tiny model over the real tiny tokenizer (EOS and pad ids set), randomly initialised."""
    return make_tiny_model(
        len(tokenizer), seed=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tmp_path_factory):
    """A tiny BERT reward model and its tokenizer, saved like a hub checkpoint (`save_tiny_reward_model`)."""
    path = tmp_path_factory.mktemp("tiny_reward_model")
    save_tiny_reward_model(path)
    return path


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tokenizer):
    """A saved base model and a directory holding only LoRA adapters on it (non-zero, so they change the logits):
    `(base_dir, adapter_dir, adapter_logits, base_logits)`."""
    from peft import LoraConfig, get_peft_model

    from dipod_trl.models import load_diffusion_model

    root = tmp_path_factory.mktemp("lora")
    base_dir, adapter_dir = str(root / "base"), str(root / "adapters")
    base = make_tiny_model(len(tokenizer), seed=3, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "out", "up", "down"], init_lora_weights=False)
    peft_model = get_peft_model(load_diffusion_model(base_dir), config)
    peft_model.save_pretrained(adapter_dir)  # what Trainer.save_model writes for a PEFT model, minus the tokenizer
    adapter_logits, base_logits = masked_batch_logits(peft_model), masked_batch_logits(base)
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # merged and base models tell apart
    return base_dir, adapter_dir, adapter_logits, base_logits

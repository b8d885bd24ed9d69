import pytest
import torch

from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


def make_tiny_model(vocab_size: int, seed: int = 0, **overrides) -> TinyMDLMForMaskedDiffusion:
    """A randomly initialised tiny model; a large init scale makes its predictions context-dependent and peaked."""
    torch.manual_seed(seed)
    config = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    config.update(overrides)
    return TinyMDLMForMaskedDiffusion(TinyMDLMConfig(**config)).eval()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    """The tiny model over the real tiny tokenizer (EOS and pad ids set), randomly initialised."""
    return make_tiny_model(
        len(tokenizer), seed=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )

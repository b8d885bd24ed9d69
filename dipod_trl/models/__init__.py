"""Models: LLaDA, Dream, the built-in tiny masked diffusion LM, its tokenizer, and adapters over the model families."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .adapters import (
    LLADA_MASK_TOKEN_ID,
    DiffusionLM,
    as_diffusion_lm,
    check_tokenizer_has_mask,
    load_diffusion_model,
    load_diffusion_tokenizer,
    unwrap_model,
)
from .dream import DreamConfig, DreamModel
from .llada import LLaDAConfig, LLaDAModelLM
from .tiny import TinyMDLMConfig, TinyMDLMForMaskedDiffusion
from .tokenizer import build_tiny_tokenizer

# Registering makes `AutoModel.from_pretrained(dir)` work for these families offline and without remote code (under
# their official model_type, so hub checkpoints of LLaDA and Dream resolve to our classes, not their `auto_map`).
for _config, _model in (
    (TinyMDLMConfig, TinyMDLMForMaskedDiffusion),
    (LLaDAConfig, LLaDAModelLM),
    (DreamConfig, DreamModel),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForMaskedLM.register(_config, _model, exist_ok=True)



def build_tiny_model(tokenizer=None, seed: int = 0, **config_overrides) -> TinyMDLMForMaskedDiffusion:
    """A freshly initialised tiny model (2 layers, width 64) over `tokenizer` (default: `build_tiny_tokenizer()`)."""
    import torch

    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config.update(config_overrides)
    torch.manual_seed(seed)
    return TinyMDLMForMaskedDiffusion(TinyMDLMConfig(**config))


__all__ = [
    "build_tiny_model",
    "LLADA_MASK_TOKEN_ID",
    "DiffusionLM",
    "DreamConfig",
    "DreamModel",
    "LLaDAConfig",
    "LLaDAModelLM",
    "TinyMDLMConfig",
    "TinyMDLMForMaskedDiffusion",
    "as_diffusion_lm",
    "build_tiny_tokenizer",
    "check_tokenizer_has_mask",
    "load_diffusion_model",
    "load_diffusion_tokenizer",
    "unwrap_model",
]

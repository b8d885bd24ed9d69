"""Models: the built-in tiny masked diffusion LM, its tokenizer, and adapters over the model families we train."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .adapters import (
    LLADA_MASK_TOKEN_ID,
    DiffusionLM,
    as_diffusion_lm,
    check_tokenizer_has_mask,
    load_diffusion_model,
    unwrap_model,
)
from .tiny import TinyMDLMConfig, TinyMDLMForMaskedDiffusion
from .tokenizer import build_tiny_tokenizer

# Registering makes `AutoModel.from_pretrained(dir)` work for saved tiny models, offline and without remote code.
AutoConfig.register(TinyMDLMConfig.model_type, TinyMDLMConfig, exist_ok=True)
AutoModel.register(TinyMDLMConfig, TinyMDLMForMaskedDiffusion, exist_ok=True)
AutoModelForMaskedLM.register(TinyMDLMConfig, TinyMDLMForMaskedDiffusion, exist_ok=True)

__all__ = [
    "LLADA_MASK_TOKEN_ID",
    "DiffusionLM",
    "TinyMDLMConfig",
    "TinyMDLMForMaskedDiffusion",
    "as_diffusion_lm",
    "build_tiny_tokenizer",
    "check_tokenizer_has_mask",
    "load_diffusion_model",
    "unwrap_model",
]

"""Models: LLaDA, Dream, SDAR, LLaDA2, the built-in tiny masked diffusion LM, its tokenizer, and the protocol the rest
of the package uses them through.

Layers, bottom up: `padding`, `kv_cache` -> `protocol` (the `DiffusionLM` interface) -> `published` -> `layers` (shared
primitives), `moe` (the mixture-of-experts block) -> `tiny`, `llada`, `dream`, `sdar`, `llada2` -> `adapters` (model ->
`DiffusionLM`) -> `loading` (checkpoints).
"""

from .adapters import NATIVE_MODELS, as_diffusion_lm, check_tokenizer_has_mask, family_traits
from .block_mask import block_causal_mask
from .dream import DreamConfig, DreamModel
from .llada import LLADA_MASK_TOKEN_ID, LLaDAConfig, LLaDAModelLM
from .llada2 import LLaDA2MoeConfig, LLaDA2MoeModelLM
from .loading import load_diffusion_model, load_diffusion_tokenizer, register_auto_classes
from .protocol import DiffusionLM, FamilyTraits, unwrap_model
from .sdar import SDARConfig, SDARForCausalLM, SDARMoeConfig, SDARMoeForCausalLM
from .tiny import (
    TinyBlockMDLMConfig,
    TinyBlockMDLMForBlockDiffusion,
    TinyMDLMConfig,
    TinyMDLMForMaskedDiffusion,
    build_tiny_model,
)
from .tokenizer import build_tiny_tokenizer

# `AutoModel.from_pretrained(dir)` resolves LLaDA, Dream and tiny checkpoints to these classes once the package is
# imported (the README's promise); the call is explicit and safe to repeat.
register_auto_classes()

__all__ = [
    "LLADA_MASK_TOKEN_ID",
    "NATIVE_MODELS",
    "DiffusionLM",
    "DreamConfig",
    "DreamModel",
    "FamilyTraits",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDA2MoeConfig",
    "LLaDA2MoeModelLM",
    "SDARConfig",
    "SDARForCausalLM",
    "SDARMoeConfig",
    "SDARMoeForCausalLM",
    "TinyBlockMDLMConfig",
    "TinyBlockMDLMForBlockDiffusion",
    "TinyMDLMConfig",
    "TinyMDLMForMaskedDiffusion",
    "as_diffusion_lm",
    "block_causal_mask",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "check_tokenizer_has_mask",
    "family_traits",
    "load_diffusion_model",
    "load_diffusion_tokenizer",
    "register_auto_classes",
    "unwrap_model",
]

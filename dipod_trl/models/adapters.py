"""From a model to the [`DiffusionLM`] protocol: the mask id, stop ids and logit alignment its family declares.

| family | `model_type` | logits | mask id |
| --- | --- | --- | --- |
| built-in tiny model | `tiny_mdlm` | aligned | `config.mask_token_id` |
| built-in tiny block-diffusion model | `tiny_block_mdlm` | aligned, block-causal | `config.mask_token_id` |
| LLaDA / LLaDA-1.5 (`GSAI-ML/LLaDA-8B-Instruct`) | `llada` | aligned | 126336; stops at EOS 126081 and EOT 126348 |
| Dream (`Dream-org/Dream-v0-Instruct-7B`) | `Dream` | shifted by one (i predicts i+1) | tokenizer's `<|mask|>` |
| SDAR / TraDo, SDAR-30B-A3B (`JetLM/SDAR-*-Chat`) | `sdar`, `sdar_moe` | aligned, block-causal | 151669 |
| LLaDA2.0 / LLaDA2.1 (`inclusionAI/LLaDA2.0-mini`) | `llada2_moe` | aligned, block-causal | 156895 |
| any Hugging Face masked LM (BERT, RoBERTa, ModernBERT, ...) | anything else | aligned | tokenizer's mask token |

A family's differences are the [`FamilyTraits`] its model class declares as `diffusion_traits`; a model of another
class (a family's published remote code, any masked LM) gets the traits registered for its `model_type`, else plain
masked-LM traits. A new family is a model class with its traits, registered in `NATIVE_MODELS`.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .dream import DreamModel
from .llada import LLaDAModelLM
from .llada2 import LLaDA2MoeModelLM
from .protocol import MASKED_LM_TRAITS, DiffusionLM, FamilyTraits, unwrap_model
from .sdar import SDARForCausalLM, SDARMoeForCausalLM
from .tiny import TinyBlockMDLMForBlockDiffusion, TinyMDLMForMaskedDiffusion

# Families implemented in this package, by `model_type`: their checkpoints load with these classes, whatever
# `auto_map` they carry, and their traits also apply to other classes of the same `model_type`.
NATIVE_MODELS: dict[str, type[PreTrainedModel]] = {
    cls.config_class.model_type: cls
    for cls in (LLaDAModelLM, DreamModel, TinyMDLMForMaskedDiffusion, TinyBlockMDLMForBlockDiffusion, SDARForCausalLM,
                SDARMoeForCausalLM, LLaDA2MoeModelLM)
}
_TRAITS_BY_MODEL_TYPE = {model_type.lower(): cls.diffusion_traits for model_type, cls in NATIVE_MODELS.items()}


def family_traits(model: torch.nn.Module) -> FamilyTraits:
    """The traits the (unwrapped) model's class declares, else those registered for its `model_type`."""
    declared = getattr(type(model), "diffusion_traits", None)
    if isinstance(declared, FamilyTraits):
        return declared
    model_type = getattr(model.config, "model_type", "") or ""
    return _TRAITS_BY_MODEL_TYPE.get(model_type.lower(), MASKED_LM_TRAITS)


def as_diffusion_lm(
    model: torch.nn.Module | DiffusionLM,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    mask_token_id: int | None = None,
) -> DiffusionLM:
    """Wrap `model` in the protocol (an adapter passes through unchanged).

    The mask id is `mask_token_id` if given, else the config's, else the family's default, else the tokenizer's. A
    model for which none is found is a `ValueError`: masked diffusion is undefined without one.
    """
    if isinstance(model, DiffusionLM):
        return model
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    if config is None:
        raise TypeError(f"Expected a Hugging Face model with a `.config`, got {type(model).__name__}.")
    traits = family_traits(base)
    for candidate in (getattr(config, "mask_token_id", None), traits.default_mask_token_id,
                      getattr(tokenizer, "mask_token_id", None)):
        mask_token_id = mask_token_id if mask_token_id is not None else candidate
    if mask_token_id is None:
        raise ValueError(
            f"mask_token_id: the model ({getattr(config, 'model_type', '') or type(base).__name__}) declares no mask "
            f"token and {'the tokenizer has none either' if tokenizer is not None else 'no tokenizer was given'}. "
            "Pass a tokenizer with a mask token, or `mask_token_id=`."
        )
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return DiffusionLM(
        model=model,
        mask_token_id=int(mask_token_id),
        eos_token_ids=tuple(_stop_ids(base, tokenizer, traits)),
        pad_token_id=pad_id if pad_id is not None else getattr(config, "pad_token_id", None),
        shift_logits=traits.shift_logits,
        pairwise_attention_mask=traits.pairwise_attention_mask,
        block_causal=traits.block_causal,
        default_block_length=traits.default_block_length,
    )


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else [int(v) for v in value]


def _stop_ids(base: torch.nn.Module, tokenizer, traits: FamilyTraits) -> list[int]:
    """The config's and generation config's EOS ids, then the family's stop tokens; without family stop tokens the
    tokenizer's EOS goes first."""
    ids = []
    generation_config = getattr(base, "generation_config", None)
    for eos in _as_id_list(getattr(base.config, "eos_token_id", None)) + _as_id_list(
        getattr(generation_config, "eos_token_id", None)
    ):
        if eos not in ids:
            ids.append(eos)
    if traits.stop_tokens:
        ids += [eos for eos in dict.fromkeys(_family_stop_ids(base.config, tokenizer, traits)) if eos not in ids]
    elif tokenizer is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return ids


def _family_stop_ids(config, tokenizer, traits: FamilyTraits) -> list[int]:
    """The family's stop tokens: from the tokenizer's vocabulary when there is one, else the family's own ids."""
    if tokenizer is None:
        vocab = getattr(config, "embedding_size", None) or getattr(config, "vocab_size", 0)
        return [i for _, i in traits.stop_tokens if i < vocab]
    vocab = tokenizer.get_vocab()
    ids = [vocab[token] for token, _ in traits.stop_tokens if token in vocab]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def check_tokenizer_has_mask(tokenizer: PreTrainedTokenizerBase) -> int:
    """Return the tokenizer's mask token id, or raise a `ValueError` that says how to fix it."""
    if tokenizer.mask_token_id is None:
        raise ValueError(
            f"mask_token: the tokenizer ({type(tokenizer).__name__}) has no mask token, so it cannot drive a masked "
            "diffusion model. Load the tokenizer that ships with the diffusion model, or add one with "
            "`tokenizer.add_special_tokens({'mask_token': ...})` and resize the embeddings."
        )
    return tokenizer.mask_token_id

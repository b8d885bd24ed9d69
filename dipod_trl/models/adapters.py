"""One small protocol over the diffusion LMs we train: mask id, special ids, and logits aligned with the inputs.

Every sampler and estimator in this package talks to a model through [`DiffusionLM`], so supporting a new model family
is a matter of one adapter class. The adapter is picked from `model.config.model_type`:

| family | `model_type` | logits | mask id |
| --- | --- | --- | --- |
| built-in tiny model | `tiny_mdlm` | aligned | `config.mask_token_id` |
| LLaDA / LLaDA-1.5 (`GSAI-ML/LLaDA-8B-Instruct`) | `llada` | aligned | 126336; stops at EOS 126081 and EOT 126348 |
| Dream (`Dream-org/Dream-v0-Instruct-7B`) | `Dream` | shifted by one (i predicts i+1) | tokenizer's `<|mask|>` |
| any Hugging Face masked LM (BERT, RoBERTa, ModernBERT, ...) | anything else | aligned | tokenizer's mask token |

Models whose class sets `supports_block_kv_cache = True` also serve the block key/value cache of fast decoding
(`logits_and_cache`, `span_logits`; the contract is in `kv_cache.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

logger = logging.get_logger(__name__)

LLADA_MASK_TOKEN_ID = 126336
# LLaDA ends a completion with <|endoftext|> (EOS, 126081) or, in chat turns, <|eot_id|> (EOT, 126348); its sampler
# fills the rest of the canvas with EOS.
LLADA_STOP_TOKENS = {"<|endoftext|>": 126081, "<|eot_id|>": 126348}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP/DeepSpeed (`.module`) and PEFT (`.base_model.model`) wrappers: the model that has the config."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    return model


def _first_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """True at each row's first attended position (and at position 0): the positions with no real predecessor."""
    after_pad = torch.cat([torch.ones_like(attention_mask[:, :1]), 1 - attention_mask[:, :-1]], dim=1)
    return after_pad.bool() & attention_mask.bool()


def _shift_onto_positions(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Shifted logits (hidden state i scores position i+1) moved onto the positions they score. A row's first real
    token has no real predecessor: it keeps its own scores, as in the unpadded row (the pad position before it would
    make them depend on the padding); so does position 0."""
    shifted = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    if attention_mask is None:
        return shifted
    return torch.where(_first_real_token(attention_mask).unsqueeze(-1), logits, shifted)


def padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count attended tokens only, so a left-padded row has the positions of the unpadded row."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


@dataclass
class DiffusionLM:
    """A masked diffusion LM behind the common protocol.

    `model` is called as given (it may be a DDP, DeepSpeed or PEFT wrapper, so that gradients flow through the
    wrapper); the ids were read from the unwrapped model's config or from the tokenizer.
    """

    model: torch.nn.Module
    mask_token_id: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    shift_logits: bool = False
    pairwise_attention_mask: bool = False

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of shape (batch, length, vocab) where `logits[:, i]` scores the token at position i."""
        from .padding import honours_attention_mask, logits_without_padding

        if attention_mask is not None and not honours_attention_mask(self):
            return logits_without_padding(self, input_ids, attention_mask)
        kwargs = {}
        if attention_mask is not None and self.pairwise_attention_mask:
            # Dream takes a (batch, 1, query, key) boolean mask and explicit positions. Padded queries keep their own
            # key so that no attention row is empty (an empty row would be NaN and leak through the values).
            keep = attention_mask.bool()[:, None, None, :]
            eye = torch.eye(input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
            kwargs["attention_mask"] = keep | eye
            kwargs["position_ids"] = padded_positions(attention_mask)
        elif attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        logits = self.model(input_ids, **kwargs).logits
        if self.shift_logits:
            # Dream predicts the next position from each hidden state; move the scores back onto their positions.
            logits = _shift_onto_positions(logits, attention_mask)
        return logits

    @property
    def supports_kv_cache(self) -> bool:
        """Whether the model implements the block key/value cache (`dipod_trl.models.kv_cache`)."""
        return bool(getattr(unwrap_model(self.model), "supports_block_kv_cache", False))

    def logits_and_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, object]:
        """One full forward: aligned logits (as `logits`) and the `BlockKVCache` of every layer's keys and values."""
        output = self.model(input_ids, attention_mask=attention_mask, position_ids=padded_positions(attention_mask),
                            use_cache=True)
        logits = output.logits
        if self.shift_logits:
            logits = _shift_onto_positions(logits, attention_mask)
        return logits, output.cache  # transformers' name of the `past_key_values` output field

    def span_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache, start: int, end: int
    ) -> torch.Tensor:
        """Aligned logits of positions `[start, end)` of the full-length `input_ids`, recomputing only that span (the
        keys/values of other positions are read from `cache`, built by `logits_and_cache`).

        With shifted logits the score of position i comes from hidden state i-1, so the span recomputed is
        `[start - 1, end)` (its last hidden state is not needed for a score, but its keys/values are fresh).
        """
        first = max(start - 1, 0) if self.shift_logits else start
        positions = padded_positions(attention_mask)
        logits = self.model(input_ids[:, first:end], attention_mask=attention_mask,
                            position_ids=positions[:, first:end], past_key_values=cache,
                            cache_position=torch.arange(first, end, device=input_ids.device)).logits
        if not self.shift_logits:
            return logits
        own = logits[:, start - first:]  # hidden states of [start, end)
        previous = logits[:, :-1] if first < start else torch.cat([own[:, :1], own[:, :-1]], dim=1)
        # As in `logits`: a row's first real token keeps its own scores.
        return torch.where(_first_real_token(attention_mask)[:, start:end].unsqueeze(-1), own, previous)

    @property
    def config(self):
        return unwrap_model(self.model).config


def as_diffusion_lm(
    model: torch.nn.Module | DiffusionLM,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    mask_token_id: int | None = None,
) -> DiffusionLM:
    """Wrap `model` in the adapter its config calls for (an adapter passes through unchanged).

    `mask_token_id` overrides what the config or tokenizer says. A model for which no mask token can be found is a
    `ValueError`: masked diffusion is undefined without one.
    """
    if isinstance(model, DiffusionLM):
        return model
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    if config is None:
        raise TypeError(f"Expected a Hugging Face model with a `.config`, got {type(model).__name__}.")
    model_type = getattr(config, "model_type", "")

    tokenizer_mask = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    shift_logits = pairwise_mask = False
    if model_type == "llada":
        default_mask = getattr(config, "mask_token_id", None) or LLADA_MASK_TOKEN_ID
    elif model_type.lower() == "dream":
        default_mask = getattr(config, "mask_token_id", None) or tokenizer_mask
        shift_logits = pairwise_mask = True
    else:  # tiny_mdlm and any masked LM
        default_mask = getattr(config, "mask_token_id", None)
        if default_mask is None:
            default_mask = tokenizer_mask
    mask_token_id = mask_token_id if mask_token_id is not None else default_mask
    if mask_token_id is None:
        raise ValueError(
            f"mask_token_id: the model ({model_type or type(base).__name__}) declares no mask token and "
            f"{'the tokenizer has none either' if tokenizer is not None else 'no tokenizer was given'}. Pass a "
            "tokenizer with a mask token, or `mask_token_id=`."
        )

    eos_ids = _as_id_list(getattr(config, "eos_token_id", None))
    generation_config = getattr(base, "generation_config", None)
    for eos in _as_id_list(getattr(generation_config, "eos_token_id", None)):
        if eos not in eos_ids:
            eos_ids.append(eos)
    if model_type == "llada":
        # The model's EOS stays first (it fills the tail); EOT also ends a completion.
        for eos in _llada_stop_ids(config, tokenizer):
            if eos not in eos_ids:
                eos_ids.append(eos)
    elif tokenizer is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad_id is None:
        pad_id = getattr(config, "pad_token_id", None)
    return DiffusionLM(
        model=model,
        mask_token_id=int(mask_token_id),
        eos_token_ids=tuple(eos_ids),
        pad_token_id=pad_id,
        shift_logits=shift_logits,
        pairwise_attention_mask=pairwise_mask,
    )


def _llada_stop_ids(config, tokenizer) -> list[int]:
    """LLaDA's EOS and EOT ids: from the tokenizer's vocabulary when there is one, else LLaDA's own ids."""
    if tokenizer is None:
        vocab = getattr(config, "embedding_size", None) or getattr(config, "vocab_size", 0)
        return [i for i in LLADA_STOP_TOKENS.values() if i < vocab]
    vocab = tokenizer.get_vocab()
    ids = [vocab[token] for token in LLADA_STOP_TOKENS if token in vocab]
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


# Families implemented in this package: their checkpoints load with our classes, whatever `auto_map` they carry.
NATIVE_MODEL_TYPES = ("llada", "Dream", "tiny_mdlm")
_remote_code_noted = False


def _native_model_class(model_type: str) -> type[PreTrainedModel]:
    from .dream import DreamModel
    from .llada import LLaDAModelLM
    from .tiny import TinyMDLMForMaskedDiffusion

    return {"llada": LLaDAModelLM, "Dream": DreamModel, "tiny_mdlm": TinyMDLMForMaskedDiffusion}[model_type]


def _note_remote_code_unused(name_or_path: str, model_type: str) -> None:
    global _remote_code_noted
    if not _remote_code_noted:
        _remote_code_noted = True
        logger.warning(
            f"trust_remote_code=True is not needed for {name_or_path} ({model_type}): it loads with dipod_trl's own "
            "implementation, and no code from the checkpoint runs."
        )


def load_diffusion_model(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    **model_init_kwargs,
) -> PreTrainedModel:
    """Load a diffusion LM by hub id or local directory with the Auto class its family needs.

    LLaDA, Dream and the tiny model load with this package's implementations (picked by `model_type`), never with
    the checkpoint's remote code, even when the caller passes `trust_remote_code=True`. Standard masked LMs load with
    `AutoModelForMaskedLM`; `trust_remote_code` applies to them and to other families only.
    """
    from transformers import AutoModelForMaskedLM, PreTrainedConfig

    from .loading import is_adapter_checkpoint, load_adapter_model

    if is_adapter_checkpoint(name_or_path, model_init_kwargs.get("revision")):  # LoRA output: base + adapters
        return load_adapter_model(name_or_path, trust_remote_code=trust_remote_code, **model_init_kwargs)

    hub_kwargs = {k: model_init_kwargs[k] for k in ("revision", "token", "cache_dir") if k in model_init_kwargs}
    config_dict, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    model_type = config_dict.get("model_type", "")
    if model_type in NATIVE_MODEL_TYPES:
        if trust_remote_code and model_type != "tiny_mdlm":
            _note_remote_code_unused(name_or_path, model_type)
        return _native_model_class(model_type).from_pretrained(name_or_path, **model_init_kwargs)
    kwargs = {"trust_remote_code": trust_remote_code, **model_init_kwargs}
    return AutoModelForMaskedLM.from_pretrained(name_or_path, **kwargs)


def load_diffusion_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, **kwargs
) -> PreTrainedTokenizerBase:
    """The tokenizer of a diffusion LM, left-padding. Dream's tokenizer files (its remote-code `DreamTokenizer` is a
    copy of Qwen2's) load with the standard Qwen2 tokenizer; every other family through `AutoTokenizer`."""
    from transformers import AutoTokenizer, PreTrainedConfig, Qwen2TokenizerFast

    kwargs.setdefault("padding_side", "left")
    hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if k in kwargs}
    try:
        model_type = PreTrainedConfig.get_config_dict(name_or_path, **hub_kwargs)[0].get("model_type", "")
    except OSError:  # a tokenizer-only directory
        model_type = ""
    if model_type == "Dream":
        return Qwen2TokenizerFast.from_pretrained(name_or_path, **kwargs)
    if model_type in NATIVE_MODEL_TYPES:
        trust_remote_code = False
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)

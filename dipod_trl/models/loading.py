"""From a checkpoint on disk (or the hub) to a model and tokenizer: the class each family loads with, the Auto-class
registration, adapter-only LoRA outputs and merging them (bitsandbytes quantisation: `quantization.py`).

A LoRA run saves only its adapters: a directory with `adapter_config.json` (which names the base model) and the
adapter weights. [`load_diffusion_model`] recognises such a directory and returns the base model with the adapters
on it (a `PeftModel`), and [`merge_adapters`] writes the merged full model, which loads like any checkpoint.
"""

from __future__ import annotations

import os

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import cached_file, logging

from .adapters import NATIVE_MODELS

logger = logging.get_logger(__name__)

ADAPTER_CONFIG_NAME = "adapter_config.json"


def _has_file(name_or_path: str, filename: str, **hub_kwargs) -> bool:
    """Whether a local directory or hub repository holds `filename` (a missing file is not an error)."""
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, filename))
    try:
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs) is not None
    except OSError:  # not a repository id at all: let the model loader say what is wrong
        return False


def is_adapter_checkpoint(name_or_path: str, revision: str | None = None) -> bool:
    """True when `name_or_path` holds PEFT adapters (an `adapter_config.json`) rather than a full model."""
    return _has_file(name_or_path, ADAPTER_CONFIG_NAME, revision=revision)


def adapter_base_model(name_or_path: str) -> str:
    """The base model an adapter checkpoint was trained on, as its `adapter_config.json` names it."""
    from peft import PeftConfig  # peft (and the bitsandbytes it pulls in) only where adapters are read

    base = PeftConfig.from_pretrained(name_or_path).base_model_name_or_path
    if not base:
        raise ValueError(
            f"{name_or_path}/{ADAPTER_CONFIG_NAME} names no base model (base_model_name_or_path is empty: the "
            "adapters were added to a model built in memory). Set base_model_name_or_path to the base's hub id or "
            "directory."
        )
    looks_local = os.path.isabs(base) or base.startswith(".") or base.count("/") > 1  # a hub id is "org/name"
    if looks_local and not os.path.isdir(base):
        raise ValueError(
            f"{name_or_path}/{ADAPTER_CONFIG_NAME}: the base model directory {base!r} does not exist (moved or "
            "deleted?). Set base_model_name_or_path to where the base model is now."
        )
    return base


def register_auto_classes() -> None:
    """Register the native families with `AutoConfig`, `AutoModel` and `AutoModelForMaskedLM` under their official
    `model_type`, so that `AutoModel.from_pretrained(dir)` loads LLaDA, Dream and tiny checkpoints with this package's
    classes, offline and without remote code (not their `auto_map`). Idempotent; `dipod_trl.models` calls it once."""
    for model_type, model_class in NATIVE_MODELS.items():
        AutoConfig.register(model_type, model_class.config_class, exist_ok=True)
        AutoModel.register(model_class.config_class, model_class, exist_ok=True)
        AutoModelForMaskedLM.register(model_class.config_class, model_class, exist_ok=True)


_remote_code_noted = False


def _note_remote_code_unused(name_or_path: str, model_type: str) -> None:
    global _remote_code_noted
    if not _remote_code_noted:
        _remote_code_noted = True
        logger.warning(
            f"trust_remote_code=True is not needed for {name_or_path} ({model_type}): it loads with dipod_trl's own "
            "implementation, and no code from the checkpoint runs."
        )


def _model_type(name_or_path: str, hub_kwargs: dict) -> str:
    return PreTrainedConfig.get_config_dict(name_or_path, **hub_kwargs)[0].get("model_type", "")


def load_diffusion_model(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    **model_init_kwargs,
) -> PreTrainedModel:
    """Load a diffusion LM by hub id or local directory with the class its family needs.

    LLaDA, Dream and the tiny model load with this package's implementations (picked by `model_type`), never with
    the checkpoint's remote code, even when the caller passes `trust_remote_code=True`. Standard masked LMs load with
    `AutoModelForMaskedLM`; `trust_remote_code` applies to them and to other families only. A directory of LoRA
    adapters loads as its base model with the adapters on top.
    """
    if is_adapter_checkpoint(name_or_path, model_init_kwargs.get("revision")):  # LoRA output: base + adapters
        return load_adapter_model(name_or_path, trust_remote_code=trust_remote_code, **model_init_kwargs)
    hub_kwargs = {k: model_init_kwargs[k] for k in ("revision", "token", "cache_dir") if k in model_init_kwargs}
    model_type = _model_type(name_or_path, hub_kwargs)
    if model_type in NATIVE_MODELS:
        if trust_remote_code and model_type not in ("tiny_mdlm", "tiny_block_mdlm"):
            _note_remote_code_unused(name_or_path, model_type)
        return NATIVE_MODELS[model_type].from_pretrained(name_or_path, **model_init_kwargs)
    kwargs = {"trust_remote_code": trust_remote_code, **model_init_kwargs}
    return AutoModelForMaskedLM.from_pretrained(name_or_path, **kwargs)


def load_diffusion_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, **kwargs
) -> PreTrainedTokenizerBase:
    """The tokenizer of a diffusion LM, left-padding: LLaDA's and Dream's with their family's tokenizer class (Dream's
    remote-code `DreamTokenizer` is a copy of Qwen2's; both save folders transformers 4.x reads, see
    `published_code_compat.py`), every other family's through `AutoTokenizer`."""
    kwargs.setdefault("padding_side", "left")
    hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if k in kwargs}
    try:
        model_type = _model_type(name_or_path, hub_kwargs)
    except OSError:  # a tokenizer-only directory
        model_type = ""
    family = NATIVE_MODELS.get(model_type)
    if family is not None and family.family_tokenizer_class is not None:
        return family.family_tokenizer_class.from_pretrained(name_or_path, **kwargs)
    if family is not None:
        trust_remote_code = False
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)


def load_adapter_model(name_or_path: str, *, trust_remote_code: bool = False, is_trainable: bool = True,
                       **model_init_kwargs):
    """The base model named in the adapter config, loaded like any diffusion LM, with the adapters on top.

    The adapters are trainable by default, as the weights of any loaded model are; `model.eval()` and `no_grad` make
    no difference to the numbers.
    """
    from peft import PeftModel

    revision = model_init_kwargs.pop("revision", None)  # the adapters' revision, not the base model's
    base = load_diffusion_model(adapter_base_model(name_or_path), trust_remote_code=trust_remote_code,
                                **model_init_kwargs)
    return PeftModel.from_pretrained(base, name_or_path, is_trainable=is_trainable, revision=revision)


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, **kwargs):
    """The checkpoint's tokenizer; for an adapter checkpoint saved without one, its base model's."""
    source = name_or_path
    if is_adapter_checkpoint(name_or_path) and not _has_file(name_or_path, "tokenizer_config.json"):
        source = adapter_base_model(name_or_path)
    return load_diffusion_tokenizer(source, trust_remote_code=trust_remote_code, **kwargs)


def merge_adapters(adapter_path: str, output_dir: str, *, trust_remote_code: bool = False) -> str:
    """Fold the LoRA adapters of `adapter_path` into their base model and save the result (and the tokenizer) to
    `output_dir`, which then loads without PEFT. Returns `output_dir`."""
    if not is_adapter_checkpoint(adapter_path):
        raise ValueError(f"{adapter_path} holds no {ADAPTER_CONFIG_NAME}: there are no adapters to merge.")
    model = load_adapter_model(adapter_path, trust_remote_code=trust_remote_code, is_trainable=False)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir)
    load_tokenizer(adapter_path, trust_remote_code=trust_remote_code).save_pretrained(output_dir)
    return output_dir

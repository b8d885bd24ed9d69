"""From a checkpoint on disk (or the hub) to a model: adapter-only LoRA outputs, merging them, and bitsandbytes
quantisation from TRL's `ModelConfig` keys.

A LoRA run saves only its adapters: a directory with `adapter_config.json` (which names the base model) and the
adapter weights. [`load_diffusion_model`] recognises such a directory and returns the base model with the adapters
on it (a `PeftModel`), and [`merge_adapters`] writes the merged full model, which loads like any checkpoint.
"""

from __future__ import annotations

import os

from .quantization import quantization_kwargs  # noqa: F401  (its home is models/quantization.py)

ADAPTER_CONFIG_NAME = "adapter_config.json"


def _has_file(name_or_path: str, filename: str, **hub_kwargs) -> bool:
    """Whether a local directory or hub repository holds `filename` (a missing file is not an error)."""
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, filename))
    from transformers.utils import cached_file

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
    from peft import PeftConfig

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


def load_adapter_model(name_or_path: str, *, trust_remote_code: bool = False, is_trainable: bool = True,
                       **model_init_kwargs):
    """The base model named in the adapter config, loaded like any diffusion LM, with the adapters on top.

    The adapters are trainable by default, as the weights of any loaded model are; `model.eval()` and `no_grad` make
    no difference to the numbers.
    """
    from peft import PeftModel

    from .adapters import load_diffusion_model

    revision = model_init_kwargs.pop("revision", None)  # the adapters' revision, not the base model's
    base = load_diffusion_model(adapter_base_model(name_or_path), trust_remote_code=trust_remote_code,
                                **model_init_kwargs)
    return PeftModel.from_pretrained(base, name_or_path, is_trainable=is_trainable, revision=revision)


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, **kwargs):
    """The checkpoint's tokenizer; for an adapter checkpoint saved without one, its base model's."""
    from .adapters import load_diffusion_tokenizer

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

"""The model and tokenizer a recipe or command names: loaded for training (dtype, quantisation, the built-in tiny
model) or for inference (eval mode, on the GPU when there is one), after checking that a local source exists and is
whole, with errors that say which of a path or a hub id failed and why."""

from __future__ import annotations

import os

DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Weights' dtype at load: `auto` (as the checkpoint stores them, the default), `float32`, `bfloat16` or "
              "`float16`.")


def check_dtype(dtype: str) -> None:
    """Refuse a `--dtype` outside `DTYPES`, naming the valid ones, before anything loads."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}; e.g. --dtype bfloat16.")


def load_model_and_tokenizer(model_args, trust_remote_code: bool):
    """The model and tokenizer of a recipe. `model_name_or_path: tiny` builds the built-in tiny model, untrained;
    `tiny_block` the same network as a block-diffusion model (the CPU stand-in of SDAR and LLaDA2 recipes)."""
    import torch

    from ..models import build_tiny_model, build_tiny_tokenizer, load_diffusion_model
    from ..models.loading import is_adapter_checkpoint, load_tokenizer
    from ..models.quantization import keep_4bit_layers_differentiable, quantization_kwargs

    name = model_args.model_name_or_path
    if name is None:
        raise ValueError("model_name_or_path: the recipe names no model.")
    quantization = quantization_kwargs(model_args)
    if name in ("tiny", "tiny_block"):
        if quantization:
            raise ValueError("load_in_4bit/load_in_8bit: the built-in tiny model is built in memory, not loaded; "
                             "quantise a saved checkpoint instead.")
        tokenizer = build_tiny_tokenizer()
        return build_tiny_model(tokenizer, block_causal=name == "tiny_block"), tokenizer
    check_model_source(name)
    if model_args.use_peft and is_adapter_checkpoint(name, model_args.model_revision):
        raise ValueError(f"use_peft: {name} already holds LoRA adapters, which train on as they are; use_peft would "
                         "stack new ones on top. Remove use_peft, or merge first with `dipod merge`.")
    kwargs = {"revision": model_args.model_revision}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    kwargs.update(quantization)
    try:
        model = load_diffusion_model(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as error:
        raise explain_load_failure(name, error) from error
    if model_args.load_in_4bit:
        keep_4bit_layers_differentiable(model)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code, padding_side="left")
    check_tokenizer_fits(model, tokenizer, name)
    return model, tokenizer


def load_for_inference(path: str, trust_remote_code: bool, dtype: str = "auto"):
    """A checkpoint in eval mode (on the GPU when there is one), its weights in `dtype` (one of `DTYPES`), and its
    left-padding tokenizer."""
    import torch

    check_dtype(dtype)
    from ..models import load_diffusion_model
    from ..models.loading import load_tokenizer

    check_model_source(path)
    try:
        model = load_diffusion_model(path, trust_remote_code=trust_remote_code,
                                     dtype=dtype if dtype == "auto" else getattr(torch, dtype)).eval()
    except OSError as error:
        raise explain_load_failure(path, error) from error
    if torch.cuda.is_available():
        model = model.cuda()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, padding_side="left")
    check_tokenizer_fits(model, tokenizer, path)
    return model, tokenizer


def check_tokenizer_fits(model, tokenizer, name: str) -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows: its highest ids would index past them."""
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return  # a model that does not expose its embeddings: nothing to compare
    if len(tokenizer) > rows:
        raise ValueError(
            f"model {name!r}: its tokenizer has {len(tokenizer)} tokens but the model's embeddings have {rows} rows, "
            f"so token ids {rows} and above cannot be looked up. The tokenizer is not the one this model was trained "
            "with: put the model's own tokenizer files in the folder, or grow the embeddings "
            "(model.resize_token_embeddings(len(tokenizer)), then train) and save both together."
        )


def _looks_like_a_path(name: str) -> bool:
    """A hub id is `name` or `namespace/name`; anything else, or a name under an existing local folder, is a path."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/") or name.count("/") > 1:
        return True
    return "/" in name and os.path.isdir(name.split("/")[0])


def check_model_source(name: str) -> None:
    """Before loading `name`: a local directory must exist and hold readable weights; a hub id is left to the hub."""
    if os.path.isdir(name):
        from ..saving.checkpoints import check_safetensors

        check_safetensors(name)
    elif _looks_like_a_path(name):
        raise FileNotFoundError(_missing_directory(name))


def _missing_directory(name: str) -> str:
    return (
        f"model {name!r}: no such directory. If an earlier step writes it, run that step first (for the tiny recipes: "
        f"`dipod sft recipes/tiny_sft.yaml --output_dir {name}`); otherwise check the path."
    )


def explain_load_failure(name: str, error: Exception) -> Exception:
    """The error to raise when loading `name` failed: for a name that is no local directory, say so first."""
    if os.path.isdir(name):
        return error
    return OSError(f"{_missing_directory(name)} Loading it as a hub id failed too: {error}")

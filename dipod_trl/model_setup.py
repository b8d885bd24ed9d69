"""The model and tokenizer a recipe or command names: loaded for training (dtype, quantisation, the built-in tiny
model) or for inference (eval mode, on the GPU when there is one)."""

from __future__ import annotations

DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Weights' dtype at load: `auto` (as the checkpoint stores them, the default), `float32`, `bfloat16` or "
              "`float16`.")


def check_dtype(dtype: str) -> None:
    """Refuse a `--dtype` outside `DTYPES`, naming the valid ones, before anything loads."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}; e.g. --dtype bfloat16.")


def load_model_and_tokenizer(model_args, trust_remote_code: bool):
    """The model and tokenizer of a recipe. `model_name_or_path: tiny` builds the built-in tiny model, untrained."""
    import torch

    from .checkpoints import check_model_source, explain_load_failure
    from .models import build_tiny_model, build_tiny_tokenizer, load_diffusion_model
    from .models.loading import is_adapter_checkpoint, load_tokenizer
    from .models.quantization import keep_4bit_layers_differentiable, quantization_kwargs

    name = model_args.model_name_or_path
    if name is None:
        raise ValueError("model_name_or_path: the recipe names no model.")
    quantization = quantization_kwargs(model_args)
    if name == "tiny":
        if quantization:
            raise ValueError("load_in_4bit/load_in_8bit: the built-in tiny model is built in memory, not loaded; "
                             "quantise a saved checkpoint instead.")
        tokenizer = build_tiny_tokenizer()
        return build_tiny_model(tokenizer), tokenizer
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
    return model, tokenizer


def load_for_inference(path: str, trust_remote_code: bool, dtype: str = "auto"):
    """A checkpoint in eval mode (on the GPU when there is one), its weights in `dtype` (one of `DTYPES`), and its
    left-padding tokenizer."""
    import torch

    check_dtype(dtype)
    from .checkpoints import check_model_source, explain_load_failure
    from .models import load_diffusion_model
    from .models.loading import load_tokenizer

    check_model_source(path)
    try:
        model = load_diffusion_model(path, trust_remote_code=trust_remote_code,
                                     dtype=dtype if dtype == "auto" else getattr(torch, dtype)).eval()
    except OSError as error:
        raise explain_load_failure(path, error) from error
    if torch.cuda.is_available():
        model = model.cuda()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, padding_side="left")
    return model, tokenizer

"""bitsandbytes quantisation (QLoRA) from the `load_in_4bit` / `load_in_8bit` / `bnb_4bit_*` keys of TRL's
`ModelConfig`.

The config is TRL's own (`trl.trainer.utils.get_quantization_config`, what `trl grpo` builds, and what d1's
`diffu_grpo_train.py` writes out by hand): NF4 or FP4 weights, optional nested quantisation, compute in `dtype`. It
sets no `llm_int8_skip_modules`, so transformers keeps its defaults (`get_keys_to_not_convert`): the output head
(`model.transformer.ff_out` in LLaDA, `lm_head` in Dream) and any tied weights stay unquantised, and embeddings are
never quantised (bitsandbytes replaces `nn.Linear` only). The blocks' linear layers, LLaDA's own `ff_out` among them,
are 4-bit. That is what d1's loading of LLaDA does too.

bitsandbytes (>= 0.49) also runs on CPU, so the same path loads and trains, slowly, without a GPU; the `gpu` extra
installs it (`pip install 'dipod-trl[gpu]'`, which `scripts/install.sh` adds on machines with an NVIDIA GPU).
"""

from __future__ import annotations

from dataclasses import fields

QUANTIZATION_KEYS = ("load_in_4bit", "load_in_8bit")
BNB_4BIT_KEYS = ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage")


def _check_bitsandbytes(key: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{key}: bitsandbytes is not installed. Install the gpu extra (pip install 'dipod-trl[gpu]'; "
            "scripts/install.sh does on a machine with an NVIDIA GPU), or remove load_in_4bit/load_in_8bit and the "
            "bnb_* keys to load the model unquantised."
        ) from error


def quantization_kwargs(model_args) -> dict:
    """`from_pretrained` keyword arguments for the bitsandbytes keys of TRL's `ModelConfig` (empty when none is set).

    One device per process: the process's GPU, or the CPU where CUDA is absent (a quantised model cannot be moved
    after loading). A key that cannot take effect is an error, never ignored.
    """
    requested = [key for key in QUANTIZATION_KEYS if getattr(model_args, key, False)]
    defaults = {f.name: f.default for f in fields(type(model_args))}
    changed_4bit = [key for key in BNB_4BIT_KEYS if key in defaults and getattr(model_args, key) != defaults[key]]
    if changed_4bit and "load_in_4bit" not in requested:
        raise ValueError(
            f"{', '.join(changed_4bit)}: these keys configure 4-bit loading, but load_in_4bit is not set, so they "
            "would have no effect. Set load_in_4bit: true, or remove them."
        )
    if not requested:
        return {}
    if len(requested) > 1:
        raise ValueError("load_in_4bit and load_in_8bit are both set; choose one.")
    _check_bitsandbytes(requested[0])
    import torch
    from accelerate import PartialState
    from trl.trainer.utils import get_quantization_config

    device = PartialState().local_process_index if torch.cuda.is_available() else "cpu"
    return {"quantization_config": get_quantization_config(model_args), "device_map": {"": device}}


def keep_4bit_layers_differentiable(model):
    """Turn off bitsandbytes' CPU inference packing of 4-bit weights, and return `model`.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit`'s weights at its first forward pass in eval
    mode without gradients (a rollout) and from then on multiplies through a kernel autograd does not see: the next
    training step gets no gradient through the base layers (none at all for the adapters below the top). Kept in
    bitsandbytes' standard layout, the layers stay differentiable; GPUs never take that path.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model

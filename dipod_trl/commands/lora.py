"""The LoRA config of a recipe (`use_peft`, `lora_*`), fitted to masked diffusion LMs."""

from __future__ import annotations

import warnings


def diffusion_peft_config(model_args, model=None):
    """TRL's LoRA config from the recipe's `use_peft`/`lora_*` keys, fitted to a masked diffusion LM.

    TRL's `lora_task_type` defaults to CAUSAL_LM, whose PEFT wrapper needs the generation hooks of a causal LM; a
    diffusion LM gets the plain `PeftModel` (no task type). Without `lora_target_modules`, every linear layer but the
    output head gets an adapter (PEFT knows no default modules for these architectures), and in an MoE model (SDAR-MoE,
    LLaDA2) so do the routed experts, whose weights are stacked 3-D parameters that `all-linear` does not reach: most
    of the model's weights, left frozen otherwise (with lora_dropout 0, all PEFT allows there). With `model`, each
    target name that matches none of its modules is a warning (see `unmatched_lora_targets`).
    """
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is None:
        return None
    if config.task_type == "CAUSAL_LM":
        config.task_type = None
    if config.target_modules is None and not config.target_parameters:
        config.target_modules = "all-linear"
        if model is not None:
            config.target_parameters = stacked_expert_parameters(model) or None
        if config.target_parameters and config.lora_dropout:
            warnings.warn(
                f"lora_dropout {config.lora_dropout} -> 0: this MoE model's routed experts get LoRA adapters too, and "
                "PEFT's adapters on stacked expert weights take no dropout. To keep dropout and leave the experts "
                "frozen, name the layers to adapt in lora_target_modules.", UserWarning, stacklevel=2)
            config.lora_dropout = 0.0
    if model is not None:
        unmatched_lora_targets(model, config.target_modules)
    return config


def stacked_expert_parameters(model) -> list[str]:
    """The routed experts' stacked weights of `model` as PEFT's `target_parameters` names them (`experts.gate_up_proj`,
    `experts.down_proj`: one LoRA pair per expert, on the 3-D parameter), or [] for a dense model."""
    from ..models.moe import MoEExperts

    if not any(isinstance(module, MoEExperts) for module in model.modules()):
        return []
    return ["experts.gate_up_proj", "experts.down_proj"]


def unmatched_lora_targets(model, target_modules) -> list[str]:
    """The names in `lora_target_modules` that match no module of `model`, each warned about with the model's linear
    layer names: PEFT adapts the names that match and says nothing of the others (LLaDA, for one, calls its layers
    `attn_out`, `ff_proj`, `ff_out` where Llama has `o_proj`, `gate_proj`, `down_proj`).

    A name matches as PEFT matches a list of targets: a module's full name or its last dotted parts. A single string is
    PEFT's regular expression or `all-linear`, and is not checked."""
    import torch

    if not target_modules or isinstance(target_modules, str):
        return []
    names = [name for name, _ in model.named_modules()]
    unmatched = sorted(t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names))
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        warnings.warn(f"lora_target_modules: {unmatched} match no module of {type(model).__name__}, so they get no "
                      f"adapters; its linear layers are {linear}.", UserWarning, stacklevel=2)
    return unmatched


def with_lora_adapters(model, model_args, activation_checkpointing: bool = False):
    """`model` with the recipe's LoRA adapters (itself without `use_peft`), for a trainer that does not add them itself
    (SFT; `DiPODTrainer` takes the config). A quantised model is prepared for QLoRA first: norms in float32, inputs
    that need gradients."""
    config = diffusion_peft_config(model_args, model)
    if config is None:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if model_args.load_in_4bit or model_args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, activation_checkpointing)
    return get_peft_model(model, config)

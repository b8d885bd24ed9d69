"""The LoRA config of a recipe (`use_peft`, `lora_*`), fitted to masked diffusion LMs."""

from __future__ import annotations


def diffusion_peft_config(model_args):
    """TRL's LoRA config from the recipe's `use_peft`/`lora_*` keys, fitted to a masked diffusion LM.

    TRL's `lora_task_type` defaults to CAUSAL_LM, whose PEFT wrapper needs the generation hooks of a causal LM; a
    diffusion LM gets the plain `PeftModel` (no task type). Without `lora_target_modules`, every linear layer but the
    output head gets an adapter (PEFT knows no default modules for these architectures).
    """
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is None:
        return None
    if config.task_type == "CAUSAL_LM":
        config.task_type = None
    if config.target_modules is None and not config.target_parameters:
        config.target_modules = "all-linear"
    return config


def with_lora_adapters(model, model_args, activation_checkpointing: bool = False):
    """`model` with the recipe's LoRA adapters (itself without `use_peft`), for a trainer that does not add them itself
    (SFT; `DiPODTrainer` takes the config). A quantised model is prepared for QLoRA first: norms in float32, inputs
    that need gradients."""
    config = diffusion_peft_config(model_args)
    if config is None:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if model_args.load_in_4bit or model_args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, activation_checkpointing)
    return get_peft_model(model, config)

"""The LoRA config of a recipe: target names that match no layer of the model are a warning that names them."""

from __future__ import annotations

import warnings

import pytest
from peft import get_peft_model
from trl import ModelConfig

from dipod_trl.commands.lora import diffusion_peft_config
from dipod_trl.models import LLaDAConfig, LLaDAModelLM

# The paper recipes' list (d1's release, written for Llama-style names).
D1_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def llada():
    return LLaDAModelLM(LLaDAConfig(d_model=8, n_heads=2, n_layers=1, mlp_hidden_size=8))


def adapted_layers(model, config) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in get_peft_model(model, config).named_modules()
            if hasattr(module, "lora_A") and name.rsplit(".", 1)[-1] != "lora_A"}


def test_targets_llada_does_not_have_are_named_with_its_linear_layers():
    args = ModelConfig(use_peft=True, lora_target_modules=D1_TARGETS)
    model = llada()
    with pytest.warns(UserWarning) as caught:
        config = diffusion_peft_config(args, model)
    message = str(caught[0].message)
    assert "['down_proj', 'gate_proj', 'o_proj'] match no module of LLaDAModelLM" in message
    assert all(name in message for name in ("attn_out", "ff_proj", "ff_out", "q_proj", "up_proj"))
    # The warning says what PEFT does: it adapts the other four names and nothing in place of the three.
    assert adapted_layers(model, config) == {"q_proj", "k_proj", "v_proj", "up_proj"}


def test_targets_that_all_match_give_no_warning():
    args = ModelConfig(use_peft=True, lora_target_modules=["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj",
                                                           "up_proj", "ff_out"])
    model = llada()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = diffusion_peft_config(args, model)
    assert adapted_layers(model, config) >= {"attn_out", "ff_proj", "ff_out"}

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


@pytest.mark.parametrize("family", ["sdar_moe", "llada2"])
def test_default_lora_reaches_the_routed_experts_trains_them_and_merges_exactly(family):
    """`all-linear` cannot reach experts stored as stacked 3-D weights (most of an MoE model's weights); the default
    config adds them as PEFT target_parameters. Trained adapters move each expert's weights, and the merged model
    gives the adapted model's logits."""
    import torch

    import dipod_trl
    from tests.helpers.block_models import make_tiny_block_model

    model = make_tiny_block_model(family)
    with pytest.warns(UserWarning, match=r"lora_dropout 0\.05 -> 0: this MoE model's routed experts get LoRA"):
        config = diffusion_peft_config(ModelConfig(use_peft=True, lora_r=4, lora_alpha=8), model)
    assert config.target_parameters == ["experts.gate_up_proj", "experts.down_proj"]
    base = {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith(("gate_up_proj",
                                                                                              "down_proj"))}
    peft_model = get_peft_model(model, config)
    expert_adapters = [n for n, p in peft_model.named_parameters() if p.requires_grad and ".experts." in n]
    # A and B, on gate_up_proj and down_proj, in each MoE layer (LLaDA2's first layer is dense)
    assert len(expert_adapters) == 2 * 2 * len(base) // 2
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    prompt, completion = torch.randint(0, 60, (4, 8), generator=generator), torch.randint(0, 60, (4, 8),
                                                                                           generator=generator)
    for _ in range(3):
        loss = -dipod_trl.elbo(peft_model, prompt, completion, num_samples=2, block_length=4).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens = torch.cat([prompt, completion], 1)
    with torch.no_grad():
        adapted = peft_model(input_ids=tokens).logits
        merged = peft_model.merge_and_unload()
        moved = {name: float((p - base[name]).abs().max()) for name, p in merged.named_parameters() if name in base}
        assert len(moved) == len(base) and min(moved.values()) > 1e-4, moved  # every expert weight trained
        torch.testing.assert_close(merged(input_ids=tokens).logits, adapted, atol=1e-4, rtol=1e-4)


def test_a_dense_model_gets_no_target_parameters():
    assert diffusion_peft_config(ModelConfig(use_peft=True), llada()).target_parameters is None

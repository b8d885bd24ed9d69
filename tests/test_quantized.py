"""QLoRA on CPU: LLaDA-, Dream-, SDAR-, SDAR-MoE- and LLaDA2-architecture checkpoints loaded in 4-bit NF4 through the
recipes' loading path (`load_in_4bit` and the `bnb_4bit_*` keys of `ModelConfig`), with bitsandbytes' CPU backend:
which layers are quantised, how far the logits move, two DiPOD steps with LoRA, an exact resume, and a merge.

The fixtures are the parity fixtures' architectures (tests/fixtures) at width 64: bitsandbytes quantises in blocks of
64 values, so narrower rows cannot be quantised."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from trl import ModelConfig

pytest.importorskip("bitsandbytes", reason="the 4-bit path needs bitsandbytes (the dev and gpu extras install it)")
import bitsandbytes as bnb  # noqa: E402

from dipod_trl.commands import cli  # noqa: E402
from dipod_trl.commands.model_setup import load_model_and_tokenizer  # noqa: E402
from dipod_trl.models import (  # noqa: E402
    DreamConfig,
    DreamModel,
    LLaDA2MoeConfig,
    LLaDA2MoeModelLM,
    LLaDAConfig,
    LLaDAModelLM,
    SDARConfig,
    SDARForCausalLM,
    SDARMoeConfig,
    SDARMoeForCausalLM,
    load_diffusion_model,
)
from tests.helpers.models import masked_batch_logits  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
WIDE = {  # fixture -> (model class, config class, width keys, output head, embeddings)
    "llada": (LLaDAModelLM, LLaDAConfig, {"d_model": 64, "mlp_hidden_size": 128},
              "model.transformer.ff_out", "model.transformer.wte"),
    "dream": (DreamModel, DreamConfig, {"hidden_size": 64, "intermediate_size": 128},
              "lm_head", "model.embed_tokens"),
    # the block-diffusion fixtures are 64 wide already; the MoE experts are stacked tensors, not linear layers, and
    # stay in bfloat16 (as do the routers)
    "sdar": (SDARForCausalLM, SDARConfig, {}, "lm_head", "model.embed_tokens"),
    "sdar_moe": (SDARMoeForCausalLM, SDARMoeConfig, {}, "lm_head", "model.embed_tokens"),
    "llada2": (LLaDA2MoeModelLM, LLaDA2MoeConfig, {}, "lm_head", "model.word_embeddings"),
}
NF4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True, dtype="bfloat16")


@pytest.fixture(scope="module", params=sorted(WIDE))
def wide_checkpoint(request, tmp_path_factory):
    """The parity fixture's config at width 64, built with our model class (random weights), with its tokenizer."""
    family = request.param
    model_class, config_class, widths, head, embeddings = WIDE[family]
    source = FIXTURES / f"{family}_tiny"
    config = json.loads((source / "config.json").read_text())
    config.pop("auto_map", None)
    config.update(widths)
    torch.manual_seed(0)
    model = model_class(config_class(**config))
    directory = tmp_path_factory.mktemp(family)
    model.save_pretrained(directory)
    for path in source.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            shutil.copy(path, directory)
    return str(directory), head, embeddings


def _ids(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250, (2, 24), generator=generator)
    ids[:, 12:] = model.config.mask_token_id if hasattr(model.config, "mask_token_id") else ids[:, 12:]
    return ids


def _relative_error(actual, expected) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def test_nf4_load_quantises_the_blocks_and_keeps_the_output_head_and_embeddings(wide_checkpoint):
    path, head, embeddings = wide_checkpoint
    model, _ = load_model_and_tokenizer(ModelConfig(model_name_or_path=path, **NF4), trust_remote_code=False)
    modules = dict(model.named_modules())
    quantised = sorted(name for name, module in modules.items() if isinstance(module, bnb.nn.Linear4bit))
    linear = sorted(name for name, module in modules.items() if isinstance(module, nn.Linear))
    assert model.is_loaded_in_4bit
    assert set(linear) - set(quantised) == {head}  # every block linear is 4-bit, the head is not
    assert modules[head].weight.dtype == torch.bfloat16 and modules[embeddings].weight.dtype == torch.bfloat16
    assert type(modules[embeddings]) is nn.Embedding
    weight = modules[quantised[0]].weight
    assert weight.quant_state.quant_type == "nf4" and weight.quant_state.nested  # the recipe's nested NF4

    fp32 = load_diffusion_model(path).eval()
    bf16 = load_diffusion_model(path, dtype=torch.bfloat16).eval()
    ids = _ids(fp32)
    reference = masked_batch_logits(fp32, ids)
    error_4bit = _relative_error(masked_batch_logits(model, ids), reference)
    error_bf16 = _relative_error(masked_batch_logits(bf16, ids), reference)
    error_4bit_vs_bf16 = _relative_error(masked_batch_logits(model, ids), masked_batch_logits(bf16, ids))
    print(f"{Path(path).name}: logits' max relative error, NF4 vs fp32 {error_4bit:.4f}, NF4 vs bf16 "
          f"{error_4bit_vs_bf16:.4f}, bf16 vs fp32 {error_bf16:.4f}")
    assert error_4bit < 0.25  # NF4 (16 levels per block of 64) keeps the logits
    assert error_4bit > 2 * error_bf16  # and it is quantised: further off than bf16 rounding alone


def _qlora_argv(path, output_dir, *extra):
    values = {**NF4, "model_name_or_path": path, "use_peft": True, "lora_r": 8, "lora_alpha": 16,
              "task": "digit_sort", "reward_funcs": "exact_match_accuracy", "num_train_examples": 16,
              "max_completion_length": 4, "block_length": 4, "diffusion_steps": 4, "num_generations": 4,
              "per_device_train_batch_size": 4, "num_iterations": 2, "dipod_beta": 0.05, "learning_rate": 1e-2,
              "max_steps": 2, "logging_steps": 1, "save_strategy": "steps", "save_steps": 1, "drift_num_orders": 0,
              "report_to": "none",
              "disable_tqdm": True, "seed": 0, "output_dir": str(output_dir)}
    return [arg for key, value in values.items() for arg in (f"--{key}", str(value))] + list(extra)


def test_qlora_trains_two_dipod_steps_resumes_exactly_and_merges(wide_checkpoint, tmp_path):
    path, _, _ = wide_checkpoint
    trainer = cli.train(_qlora_argv(path, tmp_path / "run"))
    assert trainer.state.global_step == 2 and trainer.model.get_base_model().is_loaded_in_4bit
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))
    final = load_file(tmp_path / "run" / "adapter_model.safetensors")
    # B starts at zero; every adapter moved, the bottom block's too (the base layers pass gradients down)
    lora_b = {name: tensor for name, tensor in final.items() if "lora_B" in name}
    assert lora_b and all(tensor.abs().max() > 0 for tensor in lora_b.values()), [
        name for name, tensor in lora_b.items() if tensor.abs().max() == 0]

    # Resume the second step from checkpoint-1 in another output directory: the same adapters, bit for bit, in bf16.
    shutil.copytree(tmp_path / "run" / "checkpoint-1", tmp_path / "resumed" / "checkpoint-1")
    cli.train(_qlora_argv(path, tmp_path / "resumed", "--resume_from_checkpoint", "true"))
    resumed = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    for name, tensor in final.items():
        assert torch.equal(resumed[name], tensor), name

    # Merge folds the adapters into the unquantised base: a full model with the adapters' logits.
    merged = cli.merge([str(tmp_path / "run"), str(tmp_path / "merged")])
    merged_model = load_diffusion_model(merged).eval()
    assert not getattr(merged_model, "is_loaded_in_4bit", False)
    with_adapters = load_diffusion_model(str(tmp_path / "run")).eval()
    ids = _ids(merged_model)
    merged = masked_batch_logits(merged_model, ids)
    torch.testing.assert_close(merged, masked_batch_logits(with_adapters, ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged, masked_batch_logits(load_diffusion_model(path), ids), atol=1e-4)

"""Loading checkpoints: adapter-only LoRA outputs (load, evaluate, merge) and the quantisation keys of ModelConfig."""

import json
import os
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

from dipod_trl.commands import cli
from dipod_trl.commands.model_setup import load_model_and_tokenizer
from dipod_trl.models import TinyMDLMForMaskedDiffusion, load_diffusion_model
from dipod_trl.models.loading import is_adapter_checkpoint, load_tokenizer
from dipod_trl.models.quantization import quantization_kwargs
from tests.helpers.models import masked_batch_logits


def test_an_adapter_directory_loads_as_its_base_with_the_adapters(lora_run):
    base_dir, adapter_dir, adapter_logits, base_logits = lora_run
    assert is_adapter_checkpoint(adapter_dir) and not is_adapter_checkpoint(base_dir)
    assert not os.path.exists(os.path.join(adapter_dir, "config.json"))  # adapters only
    model = load_diffusion_model(adapter_dir)
    assert isinstance(model, PeftModel)
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # the adapters matter ...
    assert torch.equal(masked_batch_logits(model), adapter_logits)  # ... and are the saved ones
    # the tokenizer comes from the base when the adapter directory has none
    assert load_tokenizer(adapter_dir)("sort: 31415").input_ids == AutoTokenizer.from_pretrained(base_dir)(
        "sort: 31415").input_ids


def test_merge_writes_a_full_model_with_the_adapter_logits(lora_run, tmp_path, capsys):
    _, adapter_dir, adapter_logits, _ = lora_run
    out = str(tmp_path / "merged")
    cli.main(["merge", adapter_dir, out])
    assert f"-> {out}" in capsys.readouterr().out
    assert not is_adapter_checkpoint(out)
    merged = load_diffusion_model(out)
    assert type(merged) is TinyMDLMForMaskedDiffusion
    torch.testing.assert_close(masked_batch_logits(merged), adapter_logits, rtol=0, atol=1e-5)
    assert AutoTokenizer.from_pretrained(out).mask_token_id == load_tokenizer(adapter_dir).mask_token_id


def test_eval_and_generate_accept_an_adapter_directory(lora_run, tmp_path, capsys):
    _, adapter_dir, _, _ = lora_run
    merged = cli.main(["merge", adapter_dir, str(tmp_path / "merged")])
    sampling = ["--gen_length", "8", "--block_length", "4", "--steps", "8"]
    records = {}
    for name, model in (("adapters", adapter_dir), ("merged", merged)):
        output = str(tmp_path / f"{name}.jsonl")
        cli.main(["eval", "--model", model, "--task", "digit_sort", "--num_examples", "16", "--batch_size", "8",
                  "--output", output, *sampling])
        with open(output) as f:
            records[name] = [json.loads(line)["generations"] for line in f]
    assert len(records["adapters"]) == 16 and records["adapters"] == records["merged"]
    prompts = ["--prompt", "sort: 31415", "sort: 90210"]
    texts = cli.main(["generate", "--model", adapter_dir, *prompts, *sampling])
    assert texts == cli.main(["generate", "--model", merged, *prompts, *sampling])


def test_merge_refuses_a_full_model_directory(lora_run):
    base_dir = lora_run[0]
    with pytest.raises(ValueError, match="no adapter_config.json"):
        cli.main(["merge", base_dir, base_dir + "-merged"])


@pytest.mark.parametrize("base, error", [("{tmp}/deleted_base", "deleted_base.*does not exist"),
                                         ("", "names no base model")])
def test_an_adapter_whose_base_cannot_be_found_says_which_base(lora_run, tmp_path, base, error):
    _, adapter_dir, _, _ = lora_run
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in os.listdir(adapter_dir):
        (moved / name).write_bytes(open(os.path.join(adapter_dir, name), "rb").read())
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base.format(tmp=tmp_path)
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=error):
        load_diffusion_model(str(moved))


def _model_args(**values):
    from trl import ModelConfig

    return ModelConfig(**{"model_name_or_path": "unused", **values})


@pytest.mark.parametrize("key", ["load_in_4bit", "load_in_8bit"])
def test_quantisation_without_bitsandbytes_is_an_error_naming_the_key_and_the_extra(key, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an environment without the gpu extra imports
    with pytest.raises(ImportError, match=f"{key}: bitsandbytes is not installed.*dipod-trl\\[gpu\\]"):
        quantization_kwargs(_model_args(**{key: True}))
    # the recipe path: `dipod train/sft` build model kwargs from ModelConfig through the same function
    with pytest.raises(ImportError, match=key):
        load_model_and_tokenizer(_model_args(**{key: True}), trust_remote_code=False)


def test_4bit_keys_without_load_in_4bit_are_an_error_not_ignored():
    assert quantization_kwargs(_model_args()) == {}
    with pytest.raises(ValueError, match="use_bnb_nested_quant.*load_in_4bit is not set"):
        quantization_kwargs(_model_args(use_bnb_nested_quant=True))
    with pytest.raises(ValueError, match="bnb_4bit_quant_type"):
        quantization_kwargs(_model_args(load_in_8bit=True, bnb_4bit_quant_type="fp4"))


def test_training_goes_on_from_an_adapter_directory_and_moves_only_the_adapters(lora_run, tmp_path):
    from dipod_trl import DiPODTrainer
    from tests.helpers.trainers import count_sevens, prompts_dataset, tiny_run_config

    base_dir, adapter_dir, _, _ = lora_run
    args = tiny_run_config(tmp_path, max_steps=1, learning_rate=1e-2)
    trainer = DiPODTrainer(adapter_dir, count_sevens, args=args, train_dataset=prompts_dataset())
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, start[n])}
    assert moved and all("lora_" in n for n in moved)
    with pytest.raises(ValueError, match="use_peft: .* already holds LoRA adapters"):
        load_model_and_tokenizer(_model_args(model_name_or_path=adapter_dir, use_peft=True), False)

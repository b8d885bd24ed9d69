"""What training and `dipod merge` save loads again and generates what the trained model generates; saved LLaDA and
Dream folders carry no stale `auto_map` and a tokenizer config that transformers 4.x (the published code's) reads.

The published code itself only runs under transformers 4.x: `scripts/check_published_loading.py` loads these folders
there and compares logits; this module checks the saved files' content and the round trip in this package."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model

import dipod_trl
from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.commands import cli
from dipod_trl.models import (
    DreamModel,
    LLaDA2MoeModelLM,
    LLaDAModelLM,
    SDARForCausalLM,
    SDARMoeForCausalLM,
    load_diffusion_model,
    load_diffusion_tokenizer,
)

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = {"llada": (LLaDAModelLM, "PreTrainedTokenizerFast"), "dream": (DreamModel, "Qwen2Tokenizer"),
            "sdar": (SDARForCausalLM, "PreTrainedTokenizerFast"),
            "sdar_moe": (SDARMoeForCausalLM, "PreTrainedTokenizerFast"),
            "llada2": (LLaDA2MoeModelLM, "PreTrainedTokenizerFast")}
PROMPTS = ["sort: 31415", "sort: 9"]
SCHEDULE = dict(gen_length=8, block_length=4, steps=8, stop_at_eos=False)


def _generate(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return dipod_trl.generate(model.eval(), batch.input_ids, batch.attention_mask, tokenizer=tokenizer, **SCHEDULE)[0]


def _read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def assert_loadable_by_published_code(folder: Path, family: str) -> None:
    """config.json: every auto_map module is in the folder or named with its hub repository (`repo--module.Class`)
    of the family's published code; tokenizer_config.json: the class 4.x has, no remote code, no 5.x-only keys; a
    generation_config.json."""
    model_class, tokenizer_class = FAMILIES[family]
    auto_map = _read(folder, "config.json")["auto_map"]
    assert set(auto_map) == set(_read(FIXTURES / f"{family}_tiny", "config.json")["auto_map"])
    for ref in auto_map.values():
        repo, _, local = ref.rpartition("--")
        module_file = folder / f"{local.split('.')[0]}.py"
        assert repo == model_class.published_code_repo or (not repo and module_file.is_file())
    tokenizer_config = _read(folder, "tokenizer_config.json")
    assert tokenizer_config["tokenizer_class"] == tokenizer_class
    assert not {"auto_map", "backend", "is_local", "local_files_only"} & tokenizer_config.keys()
    assert "eos_token_id" in _read(folder, "generation_config.json")  # the published Dream code reads it to load


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """For each family: LoRA adapters (non-zero) on the fixture, their generations, and the `dipod merge` folder."""
    out = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(family)
        source = str(FIXTURES / f"{family}_tiny")
        torch.manual_seed(0)
        targets = ["query_key_value", "dense"] if family == "llada2" else ["q_proj", "v_proj"]
        model = get_peft_model(load_diffusion_model(source),
                               LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
        model.save_pretrained(root / "adapters")
        expected = _generate(model, load_diffusion_tokenizer(source))
        cli.main(["merge", str(root / "adapters"), str(root / "merged")])
        out[family] = root / "merged", expected
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_folder_loads_generates_like_the_adapters_and_names_only_code_that_exists(merged, family):
    folder, expected = merged[family]
    assert_loadable_by_published_code(folder, family)
    model = load_diffusion_model(str(folder))
    assert type(model) is FAMILIES[family][0]
    assert torch.equal(_generate(model, load_diffusion_tokenizer(str(folder))), expected)
    assert (expected != _generate(load_diffusion_model(str(FIXTURES / f"{family}_tiny")),
                                  load_diffusion_tokenizer(str(folder)))).any()  # the adapters changed the model


def test_modeling_files_next_to_the_source_travel_with_the_saved_folder(tmp_path):
    """A source folder that ships the modeling code (as the hub repositories do): the saved folder gets a copy of the
    modules auto_map names and of those they import (as Dream's modeling imports its generation utilities), and
    auto_map keeps naming them locally."""
    source = tmp_path / "source"
    shutil.copytree(FIXTURES / "llada_tiny", source)
    code = {"configuration_llada.py": "# configuration\n", "helpers.py": "# imported by the modeling code\n",
            "modeling_llada.py": "from .configuration_llada import LLaDAConfig\nfrom .helpers import thing\n"}
    for name, text in code.items():
        (source / name).write_text(text)
    load_diffusion_model(str(source)).save_pretrained(tmp_path / "saved")
    load_diffusion_tokenizer(str(source)).save_pretrained(tmp_path / "saved")
    assert _read(tmp_path / "saved", "config.json")["auto_map"] == _read(source, "config.json")["auto_map"]
    for name, text in code.items():
        assert (tmp_path / "saved" / name).read_text() == text
    assert_loadable_by_published_code(tmp_path / "saved", "llada")


def test_the_trainers_saved_model_loads_and_generates_what_the_trainer_generates(tmp_path):
    prompts = [[{"role": "user", "content": f"sort: {i}{(7 * i) % 10}"}] for i in range(8)]
    config = DiPODConfig(
        output_dir=str(tmp_path / "run"), max_completion_length=4, block_length=4, diffusion_steps=4,
        num_generations=4, per_device_train_batch_size=8, max_steps=1, learning_rate=1e-2, report_to="none",
        save_strategy="no", disable_tqdm=True, seed=0, drift_num_orders=0,
    )

    def reward(completions, **kwargs):  # spread across any completions, so the batch carries advantages
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [(sum(map(ord, t)) % 7) / 7 for t in texts]

    source = str(FIXTURES / "llada_tiny")
    trainer = DiPODTrainer(source, reward, args=config, train_dataset=Dataset.from_dict({"prompt": prompts}))
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    saved = tmp_path / "saved"
    assert_loadable_by_published_code(saved, "llada")
    expected = _generate(trainer.model, trainer.processing_class)
    assert (expected != _generate(load_diffusion_model(source), trainer.processing_class)).any()  # it trained
    assert torch.equal(_generate(load_diffusion_model(str(saved)), load_diffusion_tokenizer(str(saved))), expected)

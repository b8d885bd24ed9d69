"""The model card written at save, for RL (DiPOD) and SFT runs: DiPOD's paper, the base model when known, the
objective and `dipod_beta`, and a quick start that runs (its command and its Python, executed here)."""

import re
import shlex

import torch
from datasets import Dataset

from dipod_trl.commands import cli
from dipod_trl.sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig
from tests.helpers.models import make_tiny_model
from tests.helpers.trainers import make_trainer

FORBIDDEN = ("DeepSeekMath", "huggingface.co/None", "from transformers import pipeline", "generator = pipeline")


def card_of(directory) -> str:
    return (directory / "README.md").read_text()


def code_block(card: str, language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", card, re.S).group(1)


def run_quick_start(card: str, capsys) -> list[str]:
    """Run the card's `dipod generate` line and its Python snippet; return what each printed."""
    command = shlex.split(code_block(card, "bash").replace("\\\n", " "))  # as a shell joins continued lines
    assert command[:2] == ["dipod", "generate"]
    texts = cli.main(command[1:])
    exec(code_block(card, "python"), {})
    printed = capsys.readouterr().out
    assert len(texts) == 1 and texts[0] in printed
    return printed


def test_an_rl_run_writes_dipods_card_with_its_objective_and_a_quick_start_that_runs(tokenizer, tmp_path, capsys):
    trainer = make_trainer(tokenizer, tmp_path, max_steps=1, dipod_beta=0.07, objective="spg")
    trainer.train()
    trainer.save_model()
    card = card_of(tmp_path / "run")
    assert "Diffusion Policy Optimization without Drifting Apart" in card
    assert "https://arxiv.org/abs/2606.13795" in card and "eprint        = {2606.13795}" in card
    assert "`objective`: `spg`, `dipod_beta`: 0.07" in card and "optimizer steps: 1" in card
    assert "base_model:" not in card and "fine-tuned version" not in card  # built in memory: no base to name
    assert "- Model family: masked diffusion LM, `model_type` `tiny_mdlm`" in card
    assert not any(text in card for text in FORBIDDEN)
    run_quick_start(card, capsys)


def test_an_sft_run_writes_a_card_that_names_its_hub_base_model(tokenizer, tmp_path, capsys):
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.config._name_or_path = "GSAI-ML/LLaDA-8B-Instruct"  # what from_pretrained records for a hub model
    data = Dataset.from_dict({"prompt": ["a", "bb"] * 4, "completion": ["xyz", "q"] * 4})
    args = MaskedSFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=4,
                           max_completion_length=16,
                           report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
    trainer = MaskedDiffusionSFTTrainer(model, args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model()
    tokenizer.save_pretrained(args.output_dir)
    card = card_of(tmp_path / "sft")
    assert card.startswith("---\nbase_model: GSAI-ML/LLaDA-8B-Instruct\n")
    assert "[GSAI-ML/LLaDA-8B-Instruct](https://huggingface.co/GSAI-ML/LLaDA-8B-Instruct)" in card
    assert "masked-diffusion SFT" in card and "dipod_beta" not in card
    assert "Diffusion Policy Optimization without Drifting Apart" in card
    assert not any(text in card for text in FORBIDDEN)
    torch.manual_seed(0)
    run_quick_start(card, capsys)


def test_the_card_names_the_model_family():
    from pathlib import Path

    from dipod_trl.models import load_diffusion_model
    from dipod_trl.saving.model_card import family_of

    fixtures = Path(__file__).parent / "fixtures"
    expected = {"sdar": "SDAR (block diffusion, Qwen3 architecture), `model_type` `sdar`",
                "sdar_moe": "SDAR-MoE (block diffusion, Qwen3-MoE architecture), `model_type` `sdar_moe`",
                "llada2": "LLaDA2 (block diffusion, mixture of experts), `model_type` `llada2_moe`",
                "llada": "LLaDA (masked diffusion, full attention), `model_type` `llada`"}
    for name, family in expected.items():
        assert family_of(load_diffusion_model(str(fixtures / f"{name}_tiny"))) == family

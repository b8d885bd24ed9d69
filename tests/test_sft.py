"""Masked-diffusion SFT: the collator's layout and the Trainer's loss, against the likelihood module."""

import pytest
import torch
from datasets import Dataset

from dipod_trl.likelihood import masked_diffusion_sft_loss
from dipod_trl.sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig, PromptCompletionCollator
from tests.helpers.models import make_tiny_model


def test_collator_left_pads_prompts_and_ends_completions_with_eos(tokenizer):
    collator = PromptCompletionCollator(tokenizer, max_prompt_length=64, max_completion_length=8)
    batch = collator([
        {"prompt": [{"role": "user", "content": "sort: 31"}], "completion": [{"role": "assistant", "content": "13"}]},
        {"prompt": "plain text prompt", "completion": "ok"},
    ])
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "sort: 31"}], add_generation_prompt=True,
                                         return_dict=True)["input_ids"]
    assert batch["prompt_ids"][0, -len(chat):].tolist() == chat
    assert batch["prompt_mask"][0].sum() == len(chat)
    assert batch["completion_ids"][0, :3].tolist() == tokenizer("13").input_ids + [tokenizer.eos_token_id]
    assert batch["completion_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="max_completion_length=2"):
        PromptCompletionCollator(tokenizer, 64, 2)([{"prompt": "p", "completion": "too long"}])
    with pytest.raises(ValueError, match="'completion'"):
        collator([{"prompt": "p"}])


def test_trainer_loss_is_the_masked_diffusion_sft_loss_and_it_learns(tokenizer, tmp_path):
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    data = Dataset.from_dict({"prompt": ["a", "bb"] * 32, "completion": ["xyz", "q"] * 32})
    args = MaskedSFTConfig(output_dir=str(tmp_path), max_steps=30, per_device_train_batch_size=16, learning_rate=3e-3,
                           report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0)
    trainer = MaskedDiffusionSFTTrainer(model, args, train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator([data[0], data[1]])
    torch.manual_seed(0)
    loss = trainer.compute_loss(model, batch)
    torch.manual_seed(0)
    expected = masked_diffusion_sft_loss(model, batch["prompt_ids"], batch["completion_ids"],
                                         completion_mask=batch["completion_mask"], attention_mask=batch["prompt_mask"])
    assert loss.item() == expected.item()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5  # two memorisable pairs: the loss collapses


def test_a_tokenizer_without_mask_token_is_refused(tmp_path):
    from tests.helpers.models import tiny_bert

    bert, tokenizer = tiny_bert(with_mask_token=False)
    args = MaskedSFTConfig(output_dir=str(tmp_path), report_to="none")
    with pytest.raises(ValueError, match="mask_token_id"):
        MaskedDiffusionSFTTrainer(bert, args, train_dataset=Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}),
                                  processing_class=tokenizer)

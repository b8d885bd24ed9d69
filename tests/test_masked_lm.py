"""A plain Hugging Face masked LM (BERT, mask id only on its tokenizer) trains with DiPOD and with masked SFT."""

import math

import torch
from datasets import Dataset

from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.likelihood import masked_diffusion_sft_loss, masked_token_logps
from dipod_trl.models import as_diffusion_lm
from dipod_trl.sft import MaskedDiffusionSFTTrainer, MaskedSFTConfig
from tests.helpers.models import tiny_bert


def _bert():
    bert, tokenizer = tiny_bert(with_mask_token=True)
    assert getattr(bert.config, "mask_token_id", None) is None  # the mask token is the tokenizer's alone
    for module in bert.modules():  # no dropout: scores computed twice must agree exactly
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return bert.train(), tokenizer


def count_a(completions, **kwargs):
    return [float(c.split().count("a")) for c in completions]


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_dipod_trains_a_bert_whose_mask_token_is_on_the_tokenizer_only(tmp_path):
    bert, tokenizer = _bert()
    before = _weights(bert)
    args = DiPODConfig(output_dir=str(tmp_path), max_completion_length=4, block_length=2, diffusion_steps=4,
                       num_generations=4, per_device_train_batch_size=8, max_steps=2, report_to="none",
                       save_strategy="no", learning_rate=1e-2, disable_tqdm=True, logging_steps=1, beta=0.04,
                       drift_num_orders=2, drift_num_sequences=2)
    data = Dataset.from_dict({"prompt": ["a b", "c d b", "d", "b c"] * 4})
    trainer = DiPODTrainer(bert, count_a, args=args, train_dataset=data, processing_class=tokenizer)

    # the trainer scores with the tokenizer's mask id: its scores equal those of the adapter built from the tokenizer
    batch = trainer._generate_and_score_completions([data[i // 4] for i in range(8)])
    draw = trainer.objective.draw(batch["completion_mask"], batch["prompt_mask"], trainer._generators)
    lm = as_diffusion_lm(bert, tokenizer)
    assert lm.mask_token_id == tokenizer.mask_token_id == 3
    with torch.no_grad():
        expected = masked_token_logps(lm, batch["prompt_ids"], batch["completion_ids"], draw,
                                      completion_mask=batch["completion_mask"], attention_mask=batch["prompt_mask"])
        torch.testing.assert_close(trainer._score(trainer.model, batch, draw), expected, rtol=0, atol=0)

    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    # the drift monitor ran too (it scores with the tokenizer's mask id as well)
    gaps = [h["drift/gap"] for h in trainer.state.log_history if "drift/gap" in h]
    assert gaps and all(math.isfinite(g) for g in gaps)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_masked_sft_trains_a_bert_whose_mask_token_is_on_the_tokenizer_only(tmp_path):
    bert, tokenizer = _bert()
    before = _weights(bert)
    data = Dataset.from_dict({"prompt": ["a b", "c"] * 8, "completion": ["b b a", "d"] * 8})
    args = MaskedSFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-2,
                           report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0)
    trainer = MaskedDiffusionSFTTrainer(bert, args, train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator([data[0], data[1]])
    torch.manual_seed(0)
    loss = trainer.compute_loss(bert, batch)
    torch.manual_seed(0)
    expected = masked_diffusion_sft_loss(as_diffusion_lm(bert, tokenizer), batch["prompt_ids"],
                                         batch["completion_ids"], completion_mask=batch["completion_mask"],
                                         attention_mask=batch["prompt_mask"])
    assert loss.item() == expected.item()
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())

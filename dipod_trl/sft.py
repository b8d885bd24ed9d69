"""Masked-diffusion SFT (the SFT stage of d1's pipeline): minimise the negative ELBO of completion tokens.

A plain `transformers.Trainer` with a masked-diffusion loss and a collator for prompt-completion data, so that
checkpointing, logging, evaluation, gradient accumulation, DeepSpeed and PEFT work as they do for any Trainer.

The dataset has TRL's prompt-completion columns: `prompt` and `completion`, both plain text, or a list of chat
messages and a list holding the assistant message. The completion is followed by EOS, which the model learns to emit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments
from trl.trainer.utils import pad

from .config import apply_device_defaults, check_training_length
from .guards.non_finite import check_weights_before_saving
from .likelihood import masked_diffusion_sft_loss
from .models import as_diffusion_lm
from .options import OneSampleElboArguments
from .saving.checkpoints import complete_checkpoint, resolve_resume
from .saving.model_card import write_model_card
from .saving.redaction import hub_token_to_environment, saving_without_secrets
from .saving.resume_settings import finish_resume, start_run
from .tasks import tokenize_prompt

_NON_FINITE_HINT = ("Lower learning_rate (or max_grad_norm), then resume from the last complete checkpoint "
                    "(--resume_from_checkpoint true).")


@dataclass
class MaskedSFTConfig(TrainingArguments, OneSampleElboArguments):
    """`TrainingArguments` for [`MaskedDiffusionSFTTrainer`], plus ELBO sampling (one `mc` sample per completion by
    default) and the fields below. `bf16` defaults to on only where CUDA supports it; `remove_unused_columns` is off
    (the collator reads `prompt` and `completion`)."""

    max_prompt_length: int = field(
        default=512, metadata={"help": "Longest prompt in tokens; longer ones are an error."}
    )
    max_completion_length: int = field(
        default=256, metadata={"help": "Longest completion in tokens, EOS included; longer ones are an error."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept off: the collator needs the raw `prompt` and `completion` columns."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision. Default: on where CUDA supports bf16, off elsewhere."}
    )

    def __post_init__(self):
        check_training_length(self)
        apply_device_defaults(self)
        super().__post_init__()
        self.check_elbo_sampling()
        if self.elbo_estimator == "block_random":
            raise ValueError("elbo_estimator='block_random' estimates the block-by-block ELBO of RL rollouts on a "
                             "generation canvas; SFT completions have none. Use 'mc', 'antithetic' or 'stratified'.")


class PromptCompletionCollator:
    """Tokenises prompt-completion rows: prompts left-padded (with the chat template's generation prompt when they are
    conversational), completions right-padded and ended with EOS."""

    def __init__(self, tokenizer, max_prompt_length: int, max_completion_length: int):
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.max_completion_length = max_completion_length

    def _completion_ids(self, completion) -> list[int]:
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def __call__(self, rows: list[dict]) -> dict:
        for row in rows:
            if "prompt" not in row or "completion" not in row:
                raise ValueError(f"SFT rows need 'prompt' and 'completion' columns, got {sorted(row)}.")
        prompts = [tokenize_prompt(self.tokenizer, row["prompt"]) for row in rows]
        completions = [self._completion_ids(row["completion"]) for row in rows]
        for kind, ids_list, limit in (("prompt", prompts, self.max_prompt_length),
                                      ("completion", completions, self.max_completion_length)):
            longest = max(len(ids) for ids in ids_list)
            if longest > limit:
                raise ValueError(f"a {kind} has {longest} tokens, more than max_{kind}_length={limit}.")
        pad_id = self.tokenizer.pad_token_id
        return {
            "prompt_ids": pad([torch.tensor(p) for p in prompts], pad_id, "left"),
            "prompt_mask": pad([torch.ones(len(p), dtype=torch.long) for p in prompts], 0, "left"),
            "completion_ids": pad([torch.tensor(c) for c in completions], pad_id, "right"),
            "completion_mask": pad([torch.ones(len(c), dtype=torch.long) for c in completions], 0, "right"),
        }


class MaskedDiffusionSFTTrainer(Trainer):
    """`Trainer` whose loss is the masked-diffusion SFT loss (negative per-token ELBO of the completion)."""

    def __init__(self, model, args: MaskedSFTConfig, train_dataset=None, eval_dataset=None, processing_class=None,
                 **kwargs):
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required to tokenise prompts and completions.")
        as_diffusion_lm(model, processing_class)  # fails early, with the reason, on a model without a mask token
        collator = PromptCompletionCollator(processing_class, args.max_prompt_length, args.max_completion_length)
        hub_token_to_environment(args)
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a per-row mean: let Trainer scale it for accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = masked_diffusion_sft_loss(
            as_diffusion_lm(model, self.processing_class),  # the tokenizer may hold the only mask id
            inputs["prompt_ids"],
            inputs["completion_ids"],
            completion_mask=inputs["completion_mask"],
            attention_mask=inputs["prompt_mask"],
            num_samples=self.args.elbo_num_samples,
            estimator=self.args.elbo_estimator,
        )
        return (loss, None) if return_outputs else loss

    def create_model_card(self, model_name=None, dataset=None, **kwargs):
        """A masked-diffusion card (SFT, a diffusion quick start, DiPOD's citation) instead of transformers' draft."""
        write_model_card(self, model_name=model_name, dataset_name=dataset)

    def save_model(self, output_dir=None, _internal_call=False):
        if not _internal_call:  # a checkpoint's weights are checked in _save_checkpoint, before its folder exists
            check_weights_before_saving(self.model, "the final model", _NON_FINITE_HINT, all_processes=False)
        super().save_model(output_dir, _internal_call)
        write_model_card(self, output_dir)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _save(self, output_dir=None, state_dict=None):
        with saving_without_secrets(self):  # training_args.bin: no hub_token in the run folder or a checkpoint
            super()._save(output_dir, state_dict)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        checkpoint = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        start_run(self, checkpoint)  # the run's id (dipod_run.json); another trainer's or model size's: refused
        return super().train(checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            finish_resume(self, checkpoint)  # learning_rate applied, changed settings recorded

    def _save_checkpoint(self, model, trial):
        check_weights_before_saving(self.model, f"step {self.state.global_step}", _NON_FINITE_HINT)
        with complete_checkpoint(self, trial):  # marked once written: `resume_from_checkpoint: true` finds it
            super()._save_checkpoint(model, trial)

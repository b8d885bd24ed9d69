"""`DiPODTrainer`: TRL's `GRPOTrainer` for masked diffusion policies, with DiPOD's self-distillation term.

The math lives in `dipod_trl.likelihood` and `dipod_trl.objectives`; the trainer connects it to GRPOTrainer's loop.
Per generation batch (`_generate_and_score_completions`):

1. prompts -> `dipod_trl.generate` (the diffusion sampler, in `_generate_single_turn`) -> completions, through
   GRPOTrainer's own prompt tokenisation (plus `prompt_truncation`), decoding and length metrics;
2. completions -> TRL's reward machinery (`_calculate_rewards`, with checks that name a failing reward function) ->
   group-relative advantages;
3. one mask draw per inner iteration (`num_iterations`), chosen by the objective and shared by the old, current and
   reference policies; the old and reference scores are computed once, here, without gradients; the drift monitor
   runs here too.

Per optimisation step, `_compute_loss` scores the current policy on that iteration's masks and asks the objective
(`dipod_trl.objectives`, chosen by `args.objective`) for its loss, then adds DiPOD's on-policy term.

Randomness: every completion has its own generator, seeded from (`seed`, the global step, its row in the global
batch); its sample and its masks come from it alone. A run therefore does not depend on how the global batch is split
over processes (two processes reproduce one process with the same global batch), and a resumed run continues exactly
where it stopped.
"""

from __future__ import annotations

import copy
import time
import warnings
from contextlib import nullcontext

import torch
from accelerate.utils import is_peft_model
from transformers import GenerationConfig, PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import GRPOTrainer
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.callbacks import SyncRefModelCallback
from trl.trainer.utils import nanstd, pad

from .config import DiPODConfig
from .drift import DRIFT_STATISTICS, drift_statistics
from .guards.non_finite import check_finite, check_finite_weights, check_weights_before_saving
from .guards.trainer_inputs import (
    RewardFunctionError,  # noqa: F401 (raised from the reward checks; part of the trainer's interface)
    check_finite_rewards,
    check_prompt_columns,
    check_train_dataset,
    guard_reward_function,
    truncate_prompts,
)
from .likelihood import masked_token_logps
from .masks import MaskDraw, block_orders, random_orders
from .models import as_diffusion_lm, load_diffusion_model, load_diffusion_tokenizer
from .objectives import LossInputs, dipod_term, group_relative_advantages, objective_class
from .randomness import SEED_STRIDE
from .sampling import generate
from .saving.checkpoints import (
    check_optimizer_state,
    complete_checkpoint,
    refusing_code,
    resolve_resume,
    resume_instead,
)
from .saving.generation_state import load_generation_state, save_generation_state
from .saving.model_card import write_model_card
from .saving.redaction import hub_token_to_environment, saving_without_secrets
from .saving.resume_settings import finish_resume, start_run

_NON_FINITE_HINT = (
    "The last complete checkpoint saved before this step holds finite weights (a resume checks them). Lower "
    "learning_rate (or max_grad_norm), check the rewards' scale, then resume from it (--resume_from_checkpoint true)."
)


def _reference_model(model, args: DiPODConfig):
    """A frozen copy of the policy for the KL term: a deep copy, or under DeepSpeed ZeRO-3 (where the policy's
    parameters are partitioned over processes and a copy would hold empty shards) the checkpoint loaded again from
    the model's path, as GRPOTrainer does."""
    if not is_deepspeed_zero3_enabled():
        return copy.deepcopy(model)
    path = getattr(model.config, "_name_or_path", "")
    if not path:
        raise ValueError(
            "beta > 0 under DeepSpeed ZeRO-3 loads the reference model from the policy's path, but this model was "
            "built in memory. Save it (model.save_pretrained(DIR)) and pass DIR as the model, or set beta=0."
        )
    kwargs = {"dtype": model.dtype, **(args.model_init_kwargs or {})}
    return load_diffusion_model(path, trust_remote_code=args.trust_remote_code, **kwargs)


def _one_reward_argument(reward_funcs, reward_fn):
    """`reward_funcs` (GRPOTrainer's name) or `reward_fn` (the short one): exactly one of them."""
    if reward_fn is not None:
        if reward_funcs is not None:
            raise ValueError("Pass either reward_funcs or reward_fn, not both.")
        return reward_fn
    if reward_funcs is None:
        raise ValueError("reward_funcs (or reward_fn) is required: DiPODTrainer needs something to score.")
    return reward_funcs


def _diffusion_model_and_tokenizer(model, processing_class, args: DiPODConfig):
    """The model (loaded if named by path) and its tokenizer, checked for a mask token and given a generation config."""
    if isinstance(model, str):
        model = load_diffusion_model(model, trust_remote_code=args.trust_remote_code, **(args.model_init_kwargs or {}))
    if processing_class is None:
        processing_class = load_diffusion_tokenizer(model.config._name_or_path,
                                                    trust_remote_code=args.trust_remote_code)
    as_diffusion_lm(model, processing_class)  # no mask token in the model or the tokenizer: stop here, say why
    if getattr(model, "generation_config", None) is None:
        # GRPOTrainer records pad/EOS ids on it; masked diffusion models often ship none.
        model.generation_config = GenerationConfig.from_model_config(model.config)
    return model, processing_class


class DiPODTrainer(GRPOTrainer):
    """GRPOTrainer for masked diffusion LMs with the FPO, diffu-GRPO and SPG objectives and DiPOD's on-policy ELBO term.

    Args:
        model: a hub id or local directory (LLaDA and Dream load with this package's implementations, no remote
            code; other families with the Auto class they need), a `PreTrainedModel`, or a `PeftModel`.
        reward_funcs: TRL reward functions `(prompts, completions, **columns) -> list[float]`, reward-model ids or
            instances, or a list of them (weighted by `args.reward_weights`).
        args: a [`DiPODConfig`].
        train_dataset, eval_dataset: datasets with a `prompt` column (plain text or conversational).
        processing_class: the tokenizer; it must have a mask token (or the model config must name one).
        reward_fn: shorthand for a single reward function, as in `DiPODTrainer(model, reward_fn)`.
        Other arguments are GRPOTrainer's.
    """

    _tag_names = ["trl", "dipod", "diffusion"]
    _name = "DiPOD"

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: DiPODConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        *,
        reward_fn=None,
    ):
        if args is None:
            args = DiPODConfig(output_dir="outputs/dipod")
        elif not isinstance(args, DiPODConfig):
            raise TypeError(f"args must be a DiPODConfig, got {type(args).__name__}.")
        reward_funcs = _one_reward_argument(reward_funcs, reward_fn)
        check_prompt_columns(train_dataset=train_dataset, eval_dataset=eval_dataset)
        check_train_dataset(train_dataset, args)
        model, processing_class = _diffusion_model_and_tokenizer(model, processing_class, args)

        # GRPOTrainer would build and score a causal-LM reference model; the reference here is scored with ELBOs on
        # the policy's masks, so the parent is built with beta = 0 and the reference is set up here. The copy is taken
        # before GRPOTrainer patches the policy's forward (a copy taken after would still call the policy's weights).
        kl_beta, sync_ref = args.beta, args.sync_ref_model
        reference = None
        if kl_beta != 0.0 and peft_config is None and not is_peft_model(model):
            reference = _reference_model(model, args).eval().requires_grad_(False)
        elif sync_ref and kl_beta != 0.0:
            raise NotImplementedError("sync_ref_model with a PEFT model is not supported (the reference is the base).")
        args.beta, args.sync_ref_model = 0.0, False
        hub_token_to_environment(args)
        try:
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                reward_processing_classes=reward_processing_classes,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        finally:
            args.beta, args.sync_ref_model = kl_beta, sync_ref
        self.beta = kl_beta  # GRPOTrainer's name for the KL weight; objectives call it kl_beta
        self.block_causal = as_diffusion_lm(model, processing_class).block_causal
        self.objective = objective_class(args.objective)(args, block_causal=self.block_causal)
        self.ref_model = None  # with PEFT: the reference is the base model, adapters disabled
        if reference is not None:
            self._prepare_reference(reference, sync_ref)
        self.reward_funcs = [
            guard_reward_function(f, name) if callable(f) and not isinstance(f, torch.nn.Module) else f
            for f, name in zip(self.reward_funcs, self.reward_func_names)
        ]
        self._generation_count = 0
        self._generators = None  # per-row generators of the current generation batch
        self._pending_time = 0.0  # generation + scoring time spent inside the current training step
        self._warned_truncation = False

    def _prepare_reference(self, reference, sync_ref: bool) -> None:
        """The KL reference placed like the policy (DeepSpeed or the accelerator), kept in step with it if asked."""
        if self.is_deepspeed_enabled:
            self.ref_model = prepare_deepspeed(reference, self.accelerator)
        else:
            self.ref_model = self.accelerator.prepare_model(reference, evaluation_mode=True)
        if sync_ref:
            self.add_callback(SyncRefModelCallback(ref_model=self.ref_model, accelerator=self.accelerator))

    # ------------------------------------------------------------------ generation

    def _tokenize_prompts(self, prompts: list):
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        limit = self.args.max_prompt_length
        prompt_ids, truncated = truncate_prompts(prompt_ids, prompts, limit, self.args.prompt_truncation)
        if truncated and not self._warned_truncation:
            warnings.warn(
                f"{truncated} prompt(s) longer than max_prompt_length={limit} were truncated on the left "
                "(prompt_truncation='left'); this warning is shown once.",
                stacklevel=2,
            )
            self._warned_truncation = True
        return prompt_ids, images, multimodal_fields

    def _row_generators(self, num_rows: int, mode: str) -> list[torch.Generator]:
        """One generator per local row, seeded by the run's seed, the step and the row's index in the global batch.

        They live on the accelerator, so the sampler's noise (rows x block x vocabulary per step) is drawn there.
        """
        offset = self.accelerator.process_index * num_rows
        step = self.state.global_step * 2 + (mode == "eval")
        seeds = [(self.args.seed * SEED_STRIDE + step * 65_537 + offset + row) % 2**63 for row in range(num_rows)]
        return [torch.Generator(device=self.accelerator.device).manual_seed(seed) for seed in seeds]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        device = self.accelerator.device
        ids = [torch.tensor(p, dtype=torch.long) for p in prompt_ids]  # [] alone would be a float tensor
        padded = pad(ids, padding_value=self._tokenizer.pad_token_id, padding_side="left").to(device)
        attention = pad([torch.ones_like(p) for p in ids], padding_value=0, padding_side="left").to(device)
        with (
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
            ) as unwrapped,
            torch.no_grad(),
        ):
            completion_ids, completion_mask, stats = generate(
                as_diffusion_lm(unwrapped, self._tokenizer),
                padded,
                attention,
                gen_length=self.args.max_completion_length,
                steps=self.args.diffusion_steps,
                **self.args.sampler_options(),  # block_length, temperature, remasking, cfg_scale
                **self.args.fast_decoding(),  # kv_cache, cache_refresh_steps, confidence_threshold
                eos_token_ids=self.eos_token_ids,
                generator=self._generators,
                return_stats=True,
            )
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["generation/forwards"].append(stats.forwards)
        self._metrics[mode]["generation/full_forwards"].append(stats.full_forwards)
        completion_ids = [c[m.bool()].tolist() for c, m in zip(completion_ids.cpu(), completion_mask.cpu())]
        return completion_ids, None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        first_row = self.accelerator.process_index * len(prompts)
        check_finite_rewards(rewards_per_func, self.reward_func_names, prompts, completions, first_row,
                             self.args.reward_nan_policy, step=self.state.global_step + 1)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if "prompt" not in inputs[0]:
            raise ValueError(f"The dataset rows have no 'prompt' (keys: {sorted(inputs[0])}).")
        prompts = [x["prompt"] for x in inputs]
        self._generators = self._row_generators(len(prompts), mode)

        start = time.perf_counter()
        prompt_ids_list, completion_ids_list, _, completions, _, _, _, _ = self._generate(prompts)
        generated = time.perf_counter()

        prompt_ids, prompt_mask, completion_ids, completion_mask = self._padded(prompt_ids_list, completion_ids_list)

        rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        advantages, rewards = group_relative_advantages(
            rewards_per_func,
            self.reward_weights,
            num_generations,
            scale_rewards=self.scale_rewards,
            aggregation=self.multi_objective_aggregation,
        )
        first = self.accelerator.process_index * len(prompts)
        local = slice(first, first + len(prompts))
        self._log_rewards(mode, rewards_per_func, rewards, num_generations, prompts, completions, advantages)

        output = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": advantages[local],
            # completion tokens of the whole generation batch (all processes): token-level losses divide by it
            "num_items_in_batch": self.accelerator.gather(completion_mask.sum()).sum(),
        }
        with torch.no_grad():
            output.update(self._draw_and_score(prompt_ids, prompt_mask, completion_ids, completion_mask, mode))
            monitor = self.args.drift_num_orders > 0 and self._generation_count % self.args.drift_every == 0
            if mode == "train" and monitor:
                self._monitor_drift(prompt_ids, prompt_mask, completion_ids, completion_mask)
        if mode == "train":
            self._generation_count += 1
        scored = time.perf_counter()
        self._metrics[mode]["time/generation"].append(generated - start)
        self._metrics[mode]["time/scoring"].append(scored - generated)
        self._pending_time += scored - start
        return output

    def _padded(self, prompt_ids_list: list, completion_ids_list: list):
        """Prompts left-padded and completions right-padded into tensors on the device, with their masks."""
        device, pad_id = self.accelerator.device, self._tokenizer.pad_token_id
        # dtype: an empty prompt ([]) would otherwise be a float tensor, and make the padded batch float.
        prompt_ids = pad([torch.tensor(p, dtype=torch.long) for p in prompt_ids_list], pad_id, "left").to(device)
        prompt_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompt_ids_list], 0, "left").to(device)
        completion_ids = pad([torch.tensor(c, dtype=torch.long) for c in completion_ids_list], pad_id, "right")
        completion_mask = pad([torch.ones(len(c), dtype=torch.long) for c in completion_ids_list], 0, "right")
        if self.objective.scores_on_canvas():  # pad to the full canvas: positions past the EOS are scored as masks
            extra = self.args.max_completion_length - completion_ids.shape[1]
            completion_ids = torch.nn.functional.pad(completion_ids, (0, extra), value=pad_id)
            completion_mask = torch.nn.functional.pad(completion_mask, (0, extra), value=0)
        return prompt_ids, prompt_mask, completion_ids.to(device), completion_mask.to(device)

    def _log_rewards(self, mode, rewards_per_func, rewards, num_generations, prompts, completions, advantages):
        for i, name in enumerate(self.reward_func_names):
            column = rewards_per_func[:, i]
            self._metrics[mode][f"rewards/{name}/mean"].append(torch.nanmean(column).item())
            self._metrics[mode][f"rewards/{name}/std"].append(nanstd(column).item())
        self._metrics[mode]["reward"].append(torch.nanmean(rewards).item())
        self._metrics[mode]["reward_std"].append(nanstd(rewards).item())
        grouped_std = nanstd(rewards.view(-1, num_generations), dim=1)
        self._metrics[mode]["frac_reward_zero_std"].append((grouped_std < 1e-8).float().mean().item())
        if self.log_completions:
            from accelerate.utils import gather_object

            self._logs["prompt"].extend(gather_object(prompts))
            self._logs["completion"].extend(gather_object(completions))
            for i, name in enumerate(self.reward_func_names):
                self._logs["rewards"][name].extend(rewards_per_func[:, i].tolist())
            self._logs["advantages"].extend(advantages.tolist())

    # ------------------------------------------------------------------ likelihood scoring

    def _score(self, model, inputs: dict, draw: MaskDraw, chunk_size=None, recompute_chunks=False) -> torch.Tensor:
        """Token log-probabilities (B, K, C) of the completions under `model` on the masks of `draw`."""
        return masked_token_logps(
            as_diffusion_lm(model, self._tokenizer),  # the tokenizer may hold the only mask id (BERT-style models)
            inputs["prompt_ids"],
            inputs["completion_ids"],
            draw,
            completion_mask=inputs["completion_mask"],
            attention_mask=inputs["prompt_mask"],
            cfg_scale=self.args.cfg_scale,
            chunk_size=chunk_size,
            recompute_chunks=recompute_chunks,
            block_length=self.args.block_length,  # a block-causal model's attention blocks, as the sampler's
        )

    def _draw_and_score(self, prompt_ids, prompt_mask, completion_ids, completion_mask, mode) -> dict:
        """One mask draw per inner iteration, with the old and reference scores on those masks."""
        batch = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
        }
        iterations = self.num_iterations if mode == "train" else 1
        draws = [self.objective.draw(completion_mask, prompt_mask, self._generators) for _ in range(iterations)]
        out = {
            "mask_completion": torch.stack([d.completion_masks for d in draws], dim=1),
            "mask_weights": torch.stack([d.weights for d in draws], dim=1),
        }
        if draws[0].prompt_masks is not None:
            out["mask_prompt"] = torch.stack([d.prompt_masks for d in draws], dim=1)
        if draws[0].context_masks is not None:
            out["mask_context"] = torch.stack([d.context_masks for d in draws], dim=1)
        if not self.objective.scores_old_policy:
            return out  # an on-policy gradient (SPG): no ratio, no reference
        # As in GRPOTrainer: when every inner iteration and micro-batch of this generation batch falls inside one
        # optimizer step, the policy has not moved and the old scores equal the current ones (ratio exactly 1).
        generate_every = self.args.steps_per_generation * self.num_iterations
        if mode == "train" and self.args.gradient_accumulation_steps % generate_every != 0:
            chunk = self.args.elbo_chunk_size
            old = [self.objective.reduce(self._score(self.model, batch, draw, chunk), draw) for draw in draws]
            out["old_scores"] = torch.stack(old, dim=1)
        if self.beta != 0.0:
            out["ref_scores"] = torch.stack([self._reference_scores(batch, d) for d in draws], 1)
        return out

    def _reference_scores(self, batch, draw: MaskDraw) -> torch.Tensor:
        if self.ref_model is not None:
            return self.objective.reduce(self._score(self.ref_model, batch, draw, self.args.elbo_chunk_size), draw)
        model = self.accelerator.unwrap_model(self.model)
        context = model.disable_adapter() if is_peft_model(model) else nullcontext()
        with context:
            return self.objective.reduce(self._score(self.model, batch, draw, self.args.elbo_chunk_size), draw)

    def _monitor_drift(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> None:
        """Log the ELBO, the importance-weighted order bound and their gap on a few on-policy completions.

        Both come from the same `drift_num_orders` random orders: the mean of the order log-likelihoods estimates
        the ELBO, their log-mean-exp is the bound, so the gap is non-negative for every completion.
        """
        n = min(self.args.drift_num_sequences, prompt_ids.shape[0])  # the same on every process
        if n == 0:
            return
        if self.block_causal:  # orders the model can follow: block after block, at random inside each
            orders = block_orders(completion_mask[:n], prompt_mask[:n], self.args.block_length,
                                  self.args.drift_num_orders, self._generators[:n])
        else:
            orders = random_orders(completion_mask[:n], self.args.drift_num_orders, self._generators[:n])
        # Its number of forward passes depends on this process's completion lengths: under ZeRO-3 it runs on weights
        # gathered once (as generation does), so that no process waits on another's forward pass.
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
        ) as model:
            stats = drift_statistics(as_diffusion_lm(model, self._tokenizer), prompt_ids[:n], prompt_mask[:n],
                                     completion_ids[:n], completion_mask[:n], orders,
                                     chunk_size=self.args.elbo_chunk_size, block_length=self.args.block_length)
        stats = self.accelerator.gather(stats.unsqueeze(0)).mean(0)
        for name, value in zip(DRIFT_STATISTICS, stats.tolist()):
            self._metrics["train"][f"drift/{name}"].append(value)

    # ------------------------------------------------------------------ loss

    def _inner_iteration(self) -> int:
        if not self.model.training:
            return 0
        return (self._step % (self.args.steps_per_generation * self.num_iterations)) // self.args.steps_per_generation

    @staticmethod
    def _iteration_masks(inputs: dict, iteration: int) -> MaskDraw:
        optional = [inputs[k][:, iteration] if k in inputs else None for k in ("mask_prompt", "mask_context")]
        return MaskDraw(inputs["mask_completion"][:, iteration], inputs["mask_weights"][:, iteration], *optional)

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        it = self._inner_iteration()
        draw = self._iteration_masks(inputs, it)
        # elbo_grad_chunk_size: the gradient pass holds one chunk of rows at a time (recomputed in backward).
        grad_chunk = self.args.elbo_grad_chunk_size
        token_logps = self._score(model, inputs, draw, grad_chunk, recompute_chunks=grad_chunk is not None)
        # This micro-batch's share of the generation batch's tokens: token-level sums divided by it average exactly
        # over processes (DDP averages) and micro-batches (accumulation sums), as TRL's DAPO loss does.
        num_tokens = inputs["num_items_in_batch"].float().clamp(min=1) / self.accelerator.num_processes
        if mode == "train":
            num_tokens = num_tokens / self.args.steps_per_generation
        batch = LossInputs(
            inputs["advantages"],
            inputs["completion_mask"],
            num_tokens,
            old_scores=inputs["old_scores"][:, it] if "old_scores" in inputs else None,
            ref_scores=inputs["ref_scores"][:, it] if "ref_scores" in inputs else None,
        )
        out = self.objective.loss(token_logps, draw, batch)
        distill = dipod_term(out.on_policy, batch.lengths, self.args.dipod_normalization, num_tokens=num_tokens)
        loss = out.loss - self.args.dipod_beta * distill
        on_policy = out.on_policy.detach()
        metrics = {**out.metrics, "dipod/term": distill, "elbo/mean": on_policy.mean(),
                   "elbo/per_token": on_policy.sum() / num_tokens}
        for name, value in metrics.items():
            self._metrics[mode][name].append(self.accelerator.gather(value.detach().float().reshape(1)).mean().item())
        if mode == "train":
            loss = loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        start = time.perf_counter()
        self._pending_time = 0.0
        output = super().training_step(model, inputs, num_items_in_batch)
        self._metrics["train"]["time/update"].append(time.perf_counter() - start - self._pending_time)
        # Trainer would log a NaN loss as the running mean (logging_nan_inf_filter) and step on NaN gradients.
        check_finite(output, "the training loss", f"step {self.state.global_step + 1}", _NON_FINITE_HINT)
        return output

    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, after clipping and before `optimizer.step()` and any save. Under fp16 loss
        # scaling an overflowed gradient is expected now and then: the scaler skips that step and lowers the scale.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if grad_norm is not None and not self.args.fp16:
            check_finite(grad_norm, "the gradient norm", f"step {self.state.global_step + 1}", _NON_FINITE_HINT)
        return grad_norm

    # ------------------------------------------------------------------ checkpoints

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """DiPOD's card (paper, objective, `dipod_beta`, a diffusion quick start) instead of GRPO's."""
        write_model_card(self, model_name=model_name, dataset_name=dataset_name)

    def save_model(self, output_dir=None, _internal_call=False):
        if not _internal_call:  # a checkpoint's weights are checked in _save_checkpoint, before its folder exists
            check_weights_before_saving(self.model, "the final model", _NON_FINITE_HINT, all_processes=False)
        super().save_model(output_dir, _internal_call)
        write_model_card(self, output_dir)  # every saved model, checkpoints included, says what it is

    def _save(self, output_dir=None, state_dict=None):
        with saving_without_secrets(self):  # training_args.bin: no hub_token in the run folder or a checkpoint
            super()._save(output_dir, state_dict)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        # `True` means the last *complete* checkpoint; a given one is checked file by file before anything loads.
        checkpoint = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        start_run(self, checkpoint)  # the run's id (dipod_run.json); another trainer's or model size's: refused
        return super().train(checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _save_checkpoint(self, model, trial):
        check_weights_before_saving(self.model, f"step {self.state.global_step}", _NON_FINITE_HINT)
        with complete_checkpoint(self, trial) as checkpoint:
            super()._save_checkpoint(model, trial)
            save_generation_state(self, checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        check_finite_weights(self.model if model is None else model, resume_from_checkpoint,
                             resume_instead(resume_from_checkpoint))
        # PEFT's load_adapter upcasts the adapters to float32; GRPOTrainer trains QLoRA adapters in bf16 (it casts
        # them at init), so cast back, or a resumed run would go on in another precision than the run it continues.
        model = self.model if model is None else model
        base = model.get_base_model() if is_peft_model(model) else model
        if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
            for name, param in model.named_parameters():
                if param.requires_grad and "lora_magnitude_vector" not in name:
                    param.data = param.data.to(torch.bfloat16)

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            check_optimizer_state(checkpoint)
        with refusing_code(checkpoint, ["optimizer.pt", "scheduler.pt"]):
            super()._load_optimizer_and_scheduler(checkpoint)
        load_generation_state(self, checkpoint)
        finish_resume(self, checkpoint)  # learning_rate applied, changed settings recorded

    def _load_rng_state(self, checkpoint):
        names = [f"rng_state_{self.args.process_index}.pth", "rng_state.pth"]
        with refusing_code(checkpoint, names) if checkpoint is not None else nullcontext():
            super()._load_rng_state(checkpoint)

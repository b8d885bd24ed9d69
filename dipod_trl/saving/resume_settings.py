"""Settings changed on resume: each one applied, refused or warned about, and recorded.

The rule (docs/guide.md, "Resuming"): a resumed run trains with the settings it is given, from the checkpoint's step
on, and says so:
- refused: a model of another size than the checkpoint's (its weights cannot load), LoRA adapters of another rank or
  on other modules (or adapters where the checkpoint holds full weights, and the reverse), a checkpoint of another
  trainer (SFT into RL), and, at a checkpoint saved inside a generation cycle, anything that changes the buffered
  batch's layout or masks (`dipod_trl.saving.generation_state`);
- `learning_rate`: applied. The optimizer and scheduler states saved in the checkpoint hold the old one; the schedule
  is rescaled to the new value, so it continues with the new peak at the same point of its shape;
- every other training setting, and the adapters' scale (`lora_alpha`, `use_rslora`) and dropout: applied as given
  (as transformers does), with a warning naming old -> new.
Every change is recorded, with the step, in `output_dir/dipod_run.json` and in the model card.
"""

from __future__ import annotations

import json
import os
import warnings

from .run_record import marker_run, read_run, run_for, write_run

# The training settings a checkpoint records (those its trainer's arguments have).
SETTINGS = (
    "objective", "dipod_beta", "dipod_normalization", "beta", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "warmup_ratio", "weight_decay", "max_grad_norm", "optim", "num_generations", "num_iterations",
    "steps_per_generation", "per_device_train_batch_size", "gradient_accumulation_steps", "elbo_num_samples",
    "elbo_estimator", "one_step_masks", "p_mask_prompt", "temperature", "max_completion_length", "block_length",
    "diffusion_steps", "remasking", "scale_rewards", "reward_weights", "loss_type", "epsilon", "epsilon_high",
    "spg_eubo_beta", "spg_negative_bound", "spg_mix_weight", "seed",
)
# LoRA config keys that fix which adapter weights exist and their shapes, and those that only scale or regularise them.
ADAPTER_SHAPE_KEYS = ("r", "target_modules", "target_parameters", "rank_pattern", "modules_to_save", "use_dora", "bias")
ADAPTER_SCALE_KEYS = ("lora_alpha", "use_rslora", "alpha_pattern", "lora_dropout")
# Model config keys that fix the weights' shapes.
MODEL_SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "intermediate_size", "max_position_embeddings")


def training_settings(args) -> dict:
    """The recorded settings of a trainer's arguments, as JSON values."""
    values = {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
    return json.loads(json.dumps(values, default=str))


def setting_changes(saved: dict, args) -> dict:
    """{name: [old, new]} for each recorded setting `args` gives another value than the checkpoint's."""
    current = training_settings(args)
    return {name: [saved[name], current[name]] for name in current if name in saved and saved[name] != current[name]}


def checkpoint_step(checkpoint: str) -> int | None:
    try:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            return int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_trainer_kind(checkpoint: str, trainer) -> None:
    saved = marker_run(checkpoint).get("trainer")
    if saved is not None and saved != type(trainer).__name__:
        raise ValueError(
            f"refusing to resume {checkpoint}: it was saved by {saved}, and this run is a {type(trainer).__name__}. "
            "Its optimizer and schedule belong to that training. Start this run from its weights instead: "
            f"--model_name_or_path {checkpoint}, without resume_from_checkpoint."
        )


def check_model_size(checkpoint: str, model) -> None:
    """Refuse a checkpoint whose model config has other shapes than `model`'s, naming each setting that differs."""
    try:
        with open(os.path.join(checkpoint, "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # adapters only (PEFT), or a checkpoint checked file by file elsewhere
    config = getattr(model, "get_base_model", lambda: model)().config.to_dict()
    changed = [f"{key} {saved[key]} (this run's model: {config[key]})" for key in MODEL_SHAPE_KEYS
               if key in saved and key in config and saved[key] != config[key]]
    if changed:
        raise ValueError(
            f"checkpoint {checkpoint} holds a model with {', '.join(changed)}: its weights cannot load into this "
            "run's model. Resume with the model the run started from (the same model_name_or_path), or start a new "
            f"run from the checkpoint's weights (--model_name_or_path {checkpoint}, without resume_from_checkpoint)."
        )


def _adapter_value(config: dict, key: str):
    value = config.get(key)
    return sorted(value) if isinstance(value, (list, set, tuple)) else value


def check_adapters(checkpoint: str, model) -> dict:
    """Refuse a checkpoint whose LoRA adapters cannot load into `model`'s (another rank or other target modules), or
    that holds adapters where `model` has none, or the reverse, naming what differs and how to resume. Returns the
    scale and dropout settings that differ, {key: [old, new]} (they load, and apply as given)."""
    try:
        with open(os.path.join(checkpoint, "adapter_config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        saved = None
    peft_config = getattr(model, "peft_config", {}).get("default")
    ours = peft_config.to_dict() if peft_config is not None else None
    if saved is None and ours is None:
        return {}
    restart = f"or start a new run from the checkpoint's weights (--model_name_or_path {checkpoint}, without " \
              "resume_from_checkpoint)"
    if ours is None:
        raise ValueError(
            f"checkpoint {checkpoint} holds LoRA adapters (r={saved.get('r')}) and this run trains the full model. "
            f"Resume with the run's LoRA settings (--use_peft true --lora_r {saved.get('r')} ...), {restart}.")
    if saved is None:
        if not os.path.exists(os.path.join(checkpoint, "config.json")):
            return {}  # neither adapters nor a model: checked file by file elsewhere
        raise ValueError(
            f"checkpoint {checkpoint} holds full model weights and this run trains LoRA adapters. Resume without "
            f"use_peft, {restart}.")
    changed = {key: [_adapter_value(saved, key), _adapter_value(ours, key)] for key in ADAPTER_SHAPE_KEYS
               if _adapter_value(saved, key) != _adapter_value(ours, key)}
    if changed:
        shown = ", ".join(f"{key} {old} (this run's: {new})" for key, (old, new) in changed.items())
        raise ValueError(
            f"checkpoint {checkpoint} holds LoRA adapters with {shown}: they cannot load into this run's adapters. "
            f"Resume with the checkpoint's LoRA settings, {restart}.")
    return {f"lora.{key}": [saved.get(key), ours.get(key)] for key in ADAPTER_SCALE_KEYS
            if saved.get(key) != ours.get(key)}


def start_run(trainer, checkpoint: str | None) -> dict:
    """The run record of `trainer.train(checkpoint)`, written into output_dir (main process) as `trainer.dipod_run`;
    refuses a checkpoint of another trainer, model size or LoRA layout. Settings changed since the checkpoint are
    recorded by `finish_resume`, once the checkpoint has loaded (a refusal while loading records nothing)."""
    record = run_for(trainer.args.output_dir, checkpoint)
    if checkpoint is not None:
        check_trainer_kind(checkpoint, trainer)
        check_model_size(checkpoint, trainer.model)
        check_adapters(checkpoint, trainer.model)
    if trainer.args.should_save:
        write_run(trainer.args.output_dir, record)
    trainer.dipod_run = record
    return record


def finish_resume(trainer, checkpoint: str) -> None:
    """Once `checkpoint`'s states are loaded: apply a changed learning_rate, then warn of and record every changed
    setting (old -> new, at the checkpoint's step) in the run record, which the model card lists."""
    changes = setting_changes(marker_run(checkpoint).get("settings", {}), trainer.args)
    changes.update(check_adapters(checkpoint, trainer.model))  # passed in start_run: only scale and dropout left
    if not changes:
        return
    apply_learning_rate(trainer, checkpoint)
    step, output_dir = checkpoint_step(checkpoint), trainer.args.output_dir
    trainer.dipod_run.setdefault("changes", []).append(
        {"step": step, "checkpoint": os.path.abspath(checkpoint), "changes": changes})
    if trainer.args.should_save:
        write_run(output_dir, trainer.dipod_run)
    shown = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())
    warnings.warn(
        f"resuming {checkpoint} (step {step}) with changed settings: {shown}. They apply from step {step} on "
        "(learning_rate by rescaling the saved schedule); recorded in "
        f"{os.path.join(output_dir, 'dipod_run.json')} and the model card. Resume with the checkpoint's values to "
        "continue the run unchanged.", stacklevel=3)


def apply_learning_rate(trainer, checkpoint: str) -> None:
    """After the optimizer and scheduler states are loaded: rescale them to `args.learning_rate` when the checkpoint
    was saved with another one (the saved states would otherwise keep the old rate while the card says the new)."""
    old = marker_run(checkpoint).get("settings", {}).get("learning_rate")
    new = trainer.args.learning_rate
    if old is None or old == new or not old:
        return
    ratio = new / old
    for group in trainer.optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    scheduler = trainer.lr_scheduler
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
        scheduler._last_lr = [group["lr"] for group in trainer.optimizer.param_groups]


def recorded_changes(output_dir: str) -> list[dict]:
    """The setting changes recorded for the run in `output_dir` (for the model card)."""
    return (read_run(output_dir) or {}).get("changes", [])

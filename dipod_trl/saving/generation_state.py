"""The generation cycle's state in a checkpoint, so that a resume inside the cycle continues on the same completions.

`DiPODTrainer` generates one batch of completions and reuses it for `steps_per_generation x num_iterations`
micro-steps. A checkpoint saved inside that cycle must carry the buffered batch (completions, advantages, masks, old
and reference scores) and the micro-step counter: regenerating after a resume would sample from moved weights and
draw new masks, and the run would diverge from the uninterrupted one. `save_generation_state` writes them next to
the Trainer's own files, one file per process (each process buffers its own share of the batch).
"""

from __future__ import annotations

import os

import torch

from .checkpoints import load_checkpoint_file

GENERATION_STATE_NAME = "generation_state_rank{rank}.pt"


# What the buffered masks, weights and scores mean: drawn by the objective's estimator, scored with or without a KL
# reference, on a canvas of max_completion_length. A mid-cycle resume with another value would reuse masks drawn for
# other settings (or fail on their shapes).
_MASK_SETTINGS = ("objective", "elbo_num_samples", "elbo_estimator", "one_step_masks", "p_mask_prompt",
                  "max_completion_length", "num_generations")


def _cycle_settings(trainer) -> dict:
    """What the buffered batch's layout and meaning depend on: a mid-cycle resume needs the same values."""
    args = trainer.args
    return {
        "num_processes": trainer.accelerator.num_processes,
        "num_iterations": trainer.num_iterations,
        "steps_per_generation": args.steps_per_generation,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        **{name: getattr(args, name) for name in _MASK_SETTINGS if hasattr(args, name)},
        "kl_reference": args.beta != 0.0,
    }


def save_generation_state(trainer, checkpoint: str) -> None:
    """Write this process's buffered generation batch and cycle counters (and the settings they hold for)."""
    os.makedirs(checkpoint, exist_ok=True)
    state = {
        "step": trainer._step,
        "generation_count": trainer._generation_count,
        "buffered_inputs": trainer._buffered_inputs,
        **_cycle_settings(trainer),
    }
    torch.save(state, os.path.join(checkpoint, GENERATION_STATE_NAME.format(rank=trainer.accelerator.process_index)))


def load_generation_state(trainer, checkpoint: str) -> None:
    """Restore what `save_generation_state` wrote, so a mid-cycle resume continues on the same completions."""
    path = os.path.join(checkpoint, GENERATION_STATE_NAME.format(rank=trainer.accelerator.process_index))
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    micro_steps = trainer.state.global_step * trainer.args.gradient_accumulation_steps
    if not os.path.isfile(path):
        if micro_steps % generate_every:
            raise FileNotFoundError(
                f"checkpoint {checkpoint!r} was saved inside a generation cycle (step {trainer.state.global_step}, "
                f"new completions every {generate_every} micro-steps) but has no {os.path.basename(path)}: resuming "
                "would regenerate from moved weights. Resume from a checkpoint at a multiple of the cycle."
            )
        trainer._step = micro_steps
        return
    device = trainer.accelerator.device  # DeepSpeed on CPUs says cpu:0, which torch.load cannot map to
    state = load_checkpoint_file(path, map_location="cpu" if device.type == "cpu" else device)
    saved = {key: state[key] for key in _cycle_settings(trainer) if key in state}
    saved.setdefault("num_processes", len([n for n in os.listdir(checkpoint) if n.startswith("generation_state_rank")]))
    current = _cycle_settings(trainer)
    trainer._generation_count = state["generation_count"]
    if state["step"] % (saved.get("steps_per_generation", 1) * saved.get("num_iterations", trainer.num_iterations)):
        check_cycle_settings(saved, current, checkpoint)
    elif any(saved[key] != current[key] for key in saved):  # a spent batch, of another layout: start a new cycle
        trainer._step, trainer._buffered_inputs = 0, None
        return
    trainer._step = state["step"]
    trainer._buffered_inputs = state["buffered_inputs"]


def check_cycle_settings(saved: dict, current: dict, checkpoint: str) -> None:
    """Refuse a mid-cycle resume whose settings differ from the saving run's: the buffered batch was split by process
    and step and holds one mask draw per inner iteration, so it cannot serve another layout."""
    changed = [f"{key} {saved[key]} (this run: {current[key]})" for key in saved if saved[key] != current[key]]
    if changed:
        raise ValueError(
            f"checkpoint {checkpoint} was saved inside a generation cycle with {', '.join(changed)}. Its buffered "
            "completions and masks were drawn and split for the saving run's settings, and would be reused for "
            "others; resume with the same values (for the process "
            "count: accelerate launch --num_processes N), or from a checkpoint at the end of a generation cycle, "
            "where any of them may change."
        )

"""Checkpoints that resume exactly: which one to resume from, whether it is whole, and the generation cycle's state.

`DiPODTrainer` generates one batch of completions and reuses it for `steps_per_generation x num_iterations`
micro-steps. A checkpoint saved inside that cycle must carry the buffered batch (completions, advantages, masks, old
and reference scores) and the micro-step counter: regenerating after a resume would sample from moved weights and
draw new masks, and the run would diverge from the uninterrupted one. `save_generation_state` writes them next to
the Trainer's own files, one file per process (each process buffers its own share of the batch).
"""

from __future__ import annotations

import os

import torch
from transformers.trainer_utils import get_last_checkpoint

GENERATION_STATE_NAME = "generation_state_rank{rank}.pt"
OPTIMIZER_NAMES = ("optimizer.pt", "optimizer.bin")


def resolve_resume(value, output_dir: str) -> str | None:
    """The checkpoint directory a `resume_from_checkpoint` value means, or None for a fresh run.

    `true` (a bool, or the string a recipe or command line gives) means the last `checkpoint-N` in `output_dir`, as
    in `Trainer.train(resume_from_checkpoint=True)`; `false` or empty means none; anything else is a path.
    """
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "none"):
        return None
    if value is True or text.lower() in ("true", "yes", "1", "last"):
        checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if checkpoint is None:
            raise FileNotFoundError(
                f"resume_from_checkpoint=true: no checkpoint-N directory in output_dir {output_dir!r} to resume from. "
                "Check output_dir, or start a fresh run without resume_from_checkpoint."
            )
    else:
        checkpoint = text
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"resume_from_checkpoint: no such checkpoint directory {checkpoint!r}.")
    check_safetensors(checkpoint)
    return checkpoint


def check_safetensors(directory: str) -> None:
    """Raise naming the first `*.safetensors` file in `directory` that cannot be read (e.g. cut short by a crash)."""
    from safetensors import safe_open

    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(directory, name)
        try:
            with safe_open(path, framework="pt"):  # checks the header and that the file covers every tensor
                pass
        except Exception as error:  # safetensors raises its own error type
            raise ValueError(
                f"{path} is not a readable safetensors file ({error}); it was probably cut short while being "
                "written. Use another checkpoint, or re-create this one."
            ) from error


def check_optimizer_state(checkpoint: str) -> None:
    """Refuse a checkpoint without optimizer state: resuming would silently restart Adam from fresh moments."""
    if not any(os.path.isfile(os.path.join(checkpoint, name)) for name in OPTIMIZER_NAMES):
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} has no optimizer.pt (saved with save_only_model=True, or cut short), so it "
            "cannot resume the run exactly. Resume from a complete checkpoint, or start a new run from its weights "
            "(model_name_or_path: the checkpoint directory)."
        )


def save_generation_state(trainer, checkpoint: str) -> None:
    """Write this process's buffered generation batch and cycle counters into `checkpoint`."""
    os.makedirs(checkpoint, exist_ok=True)
    state = {
        "step": trainer._step,
        "generation_count": trainer._generation_count,
        "buffered_inputs": trainer._buffered_inputs,
    }
    torch.save(state, os.path.join(checkpoint, GENERATION_STATE_NAME.format(rank=trainer.accelerator.process_index)))


def load_generation_state(trainer, checkpoint: str) -> None:
    """Restore what `save_generation_state` wrote, so a mid-cycle resume continues on the same completions."""
    path = os.path.join(checkpoint, GENERATION_STATE_NAME.format(rank=trainer.accelerator.process_index))
    if not os.path.isfile(path):
        generate_every = trainer.args.steps_per_generation * trainer.num_iterations
        micro_steps = trainer.state.global_step * trainer.args.gradient_accumulation_steps
        if micro_steps % generate_every:
            raise FileNotFoundError(
                f"checkpoint {checkpoint!r} was saved inside a generation cycle (step {trainer.state.global_step}, "
                f"new completions every {generate_every} micro-steps) but has no {os.path.basename(path)}: resuming "
                "would regenerate from moved weights. Resume from a checkpoint at a multiple of the cycle."
            )
        trainer._step = micro_steps
        return
    device = trainer.accelerator.device  # DeepSpeed on CPUs says cpu:0, which torch.load cannot map to
    state = torch.load(path, map_location="cpu" if device.type == "cpu" else device, weights_only=True)
    trainer._step = state["step"]
    trainer._generation_count = state["generation_count"]
    trainer._buffered_inputs = state["buffered_inputs"]


def _looks_like_a_path(name: str) -> bool:
    """A hub id is `name` or `namespace/name`; anything else, or a name under an existing local folder, is a path."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/") or name.count("/") > 1:
        return True
    return "/" in name and os.path.isdir(name.split("/")[0])


def check_model_source(name: str) -> None:
    """Before loading `name`: a local directory must exist and hold readable weights; a hub id is left to the hub."""
    if os.path.isdir(name):
        check_safetensors(name)
    elif _looks_like_a_path(name):
        raise FileNotFoundError(_missing_directory(name))


def _missing_directory(name: str) -> str:
    return (
        f"model {name!r}: no such directory. If an earlier step writes it, run that step first (for the tiny recipes: "
        f"`dipod sft recipes/tiny_sft.yaml --output_dir {name}`); otherwise check the path."
    )


def explain_load_failure(name: str, error: Exception) -> Exception:
    """The error to raise when loading `name` failed: for a name that is no local directory, say so first."""
    if os.path.isdir(name):
        return error
    return OSError(f"{_missing_directory(name)} Loading it as a hub id failed too: {error}")

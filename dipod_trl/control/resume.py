"""A control checkpoint resumed with other settings: refused where the networks would not fit, warned and recorded
otherwise (the rule of `dipod_trl.saving.resume_settings`, for `FlowPolicyConfig`)."""

from __future__ import annotations

import os
import warnings

# Settings that fix the policy's or critic's weights (their shapes, or the policy's kind: Gaussian for ppo).
SHAPE_SETTINGS = ("env_id", "actor_hidden_sizes", "critic_hidden_sizes", "time_embed_dim")
# Bookkeeping that may change on any resume without changing the training.
FREE_SETTINGS = ("output_dir", "resume_from_checkpoint", "overwrite_output_dir", "total_timesteps", "save_every",
                 "eval_every", "eval_episodes", "logging_steps", "torch_num_threads", "report_to", "vectorization_mode")


def _policy_kind(loss_type: str) -> str:
    return "a Gaussian policy" if loss_type == "ppo" else "a flow policy"


def control_changes(saved: dict, current: dict, checkpoint: str) -> dict:
    """{name: [old, new]} for the settings changed since `checkpoint`; raises for those its weights cannot follow."""
    changes = {name: [saved[name], value] for name, value in current.items()
               if name in saved and name not in FREE_SETTINGS and saved[name] != value}
    refused = [name for name in SHAPE_SETTINGS if name in changes]
    old_loss, new_loss = changes.get("loss_type", [None, None])
    if old_loss is not None and _policy_kind(old_loss) != _policy_kind(new_loss):
        refused.append("loss_type")
    if refused:
        shown = ", ".join(f"{name} {changes[name][0]} (this run: {changes[name][1]})" for name in refused)
        extra = " (ppo trains a Gaussian policy, fpo and fpo++ a flow policy)" if "loss_type" in refused else ""
        raise ValueError(
            f"checkpoint {checkpoint} was saved by a run with {shown}{extra}: its policy and critic do not fit this "
            "run's networks. Resume with the checkpoint's values, or start a new run in a new output_dir."
        )
    return changes


def warn_changes(changes: dict, checkpoint: str, update: int, output_dir: str) -> None:
    shown = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())
    warnings.warn(
        f"resuming {checkpoint} (update {update}) with changed settings: {shown}. They apply from update {update} on; "
        f"recorded in {os.path.join(output_dir, 'dipod_run.json')}. Resume with the checkpoint's values to continue "
        "the run unchanged.", stacklevel=3)

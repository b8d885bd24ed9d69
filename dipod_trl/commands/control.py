"""`dipod control RECIPE [--key value ...]`: train a flow policy from a recipe of `FlowPolicyConfig` fields."""

from __future__ import annotations

import sys

from ..control.config import FlowPolicyConfig
from ..saving.checkpoints import resolve_resume
from .output_dir import claim_output_dir
from .recipe import parse_recipe


def main(argv: list[str] | None = None) -> dict:
    """Parse `[RECIPE.yaml] [--key value ...]`, train, and return the final evaluation metrics."""
    from ..control.trainer import FlowPolicyTrainer

    argv = sys.argv[1:] if argv is None else list(argv)
    (config,) = parse_recipe([FlowPolicyConfig], argv)
    config.resume_from_checkpoint = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    print(
        f"training a flow policy on {config.env_id} with {config.loss_type} ({config.trust_region_mode}), "
        f"dipod_beta={config.dipod_beta}, warmstart_rollouts={config.warmstart_rollouts}; output in {config.output_dir}"
    )
    with claim_output_dir(config.output_dir, config.resume_from_checkpoint, config.overwrite_output_dir):
        result = FlowPolicyTrainer(config).train()
    print(f"final evaluation: {result}")
    return result


if __name__ == "__main__":
    main()

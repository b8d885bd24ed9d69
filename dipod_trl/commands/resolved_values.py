"""`python -m dipod_trl.commands.resolved_values KEY[,KEY...] RECIPE [--key value ...]`: print what a training run
would use for each KEY (one line each, empty for None), parsed exactly as `dipod train` parses it: the recipe's
values, overridden by the command line. Shell scripts that launch training (recipes/slurm/launch.sh) read keys
through this, so that they and the trainer never disagree about, say, the output directory.
"""

from __future__ import annotations

import sys


def resolved_values(keys: list[str], argv: list[str]) -> list:
    """The values `dipod train argv` would give `keys` (fields of ModelConfig, TaskArguments, DiPODConfig or
    OutputArguments)."""
    import torch
    from trl import ModelConfig

    from ..config import DiPODConfig
    from .output_dir import OutputArguments
    from .recipe import check_keys, parse_recipe
    from .task_data import TaskArguments

    dataclass_types = [ModelConfig, TaskArguments, DiPODConfig, OutputArguments]
    check_keys(keys, dataclass_types, "the keys asked for")
    if not torch.cuda.is_available() and not {"bf16", "fp16"} & set(keys):
        # transformers refuses bf16/fp16 without a GPU (a login node, a test); they change no other key
        argv = [*argv, "--bf16", "false", "--fp16", "false"]
    parsed = parse_recipe(dataclass_types, argv)
    values = []
    for key in keys:
        holder = next(config for config in parsed if hasattr(config, key))
        values.append(getattr(holder, key))
    return values


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 1 or argv[0].startswith("-"):
        raise SystemExit("usage: python -m dipod_trl.commands.resolved_values KEY[,KEY...] RECIPE [--key value ...]")
    for value in resolved_values(argv[0].split(","), argv[1:]):
        print("" if value is None else value)


if __name__ == "__main__":
    main()

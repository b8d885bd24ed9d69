"""Recipes: a YAML file of config fields plus `--key value` overrides, parsed into dataclasses with TRL's `TrlParser`.

Every key maps one to one onto a field of one of the dataclasses; a key that matches none is an error that names it
and suggests the closest valid key, so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields

import yaml


def _field_names(dataclass_types) -> set[str]:
    return {f.name for cls in dataclass_types for f in fields(cls) if f.init}


def check_keys(keys, dataclass_types, where: str) -> None:
    """Raise a `ValueError` naming every key that is no field of `dataclass_types`, with the closest valid key."""
    valid = _field_names(dataclass_types) | {"config", "env"}  # TrlParser reads `env:` itself
    problems = []
    for key in keys:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problems.append(f"unknown key {key!r} in {where}.{hint}")
    if problems:
        names = ", ".join(cls.__name__ for cls in dataclass_types)
        raise ValueError("; ".join(problems) + f" (valid keys are the fields of {names})")


def _cli_keys(args: list[str]) -> list[str]:
    keys = []
    for arg in args:
        if arg.startswith("--"):
            keys.append(arg[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def parse_recipe(dataclass_types, argv: list[str]):
    """Parse `[RECIPE.yaml] [--key value ...]` into one instance of each dataclass in `dataclass_types`.

    The recipe gives the values, the command line overrides them. Returns a tuple, in the order of `dataclass_types`.
    """
    from trl import TrlParser

    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        TrlParser(dataclass_types).parse_args(["--help"])  # prints every field's help and exits
    config_args: list[str] = []
    if argv and not argv[0].startswith("-"):
        recipe = argv.pop(0)
        if not os.path.isfile(recipe):
            raise FileNotFoundError(f"recipe {recipe!r} does not exist.")
        with open(recipe) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"recipe {recipe!r} must be a YAML mapping of config keys to values.")
        check_keys(values.keys(), dataclass_types, f"recipe {recipe}")
        config_args = ["--config", recipe]
    check_keys(_cli_keys(argv), dataclass_types, "the command line")
    parser = TrlParser(dataclass_types)
    return tuple(parser.parse_args_and_config(config_args + argv))

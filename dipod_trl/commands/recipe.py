"""Recipes: a YAML file of config fields plus `--key value` overrides, parsed into dataclasses with TRL's `TrlParser`.

Every key maps one to one onto a field of one of the dataclasses; a key that matches none is an error that names it
and suggests the closest valid key, so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import fields

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged by SafeLoader itself below
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in lines:
                raise ValueError(
                    f"{key_node.start_mark.name}: key {key!r} is given twice (lines {lines[key]} and {line}); YAML "
                    "would keep the last value silently. Delete one of them."
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_recipe_file(path: str):
    """The YAML document in `path`; a key given twice in a mapping is an error naming the key and its lines."""
    with open(path) as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)


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


def _accepted_types(hint) -> set:
    """The plain Python types a field's annotation accepts (`float | None` -> {float, NoneType})."""
    if hint is typing.Any:
        return {object}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_accepted_types(arg) for arg in typing.get_args(hint)))
    if origin is typing.Literal:
        return {type(arg) for arg in typing.get_args(hint)}
    return {origin or hint}


def _item_types(hint) -> set:
    """The item types of the list types a field's annotation accepts (`list[str] | None` -> {str})."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_item_types(arg) for arg in typing.get_args(hint)))
    return set(typing.get_args(hint)[:1]) if origin in (list, tuple) else set()


def _wrong_item(value: list, item_types: set) -> str | None:
    """Why an item of a recipe list does not fit a `list[str]` / `list[float]` field, or None."""
    for i, item in enumerate(value):
        if isinstance(item, (list, tuple)):
            return (f"item {i} is a list, {item!r}. A YAML alias (*name) to a list inserts that list as one item, it "
                    "does not splice its items in: write the items out, or anchor single items (`- &acc name` ... "
                    "`- *acc`)")
        if isinstance(item, dict):
            return f"item {i} is a mapping, {item!r}: write each item as a plain value"
        if item_types == {str}:
            fits = isinstance(item, str)
        else:  # numbers: true/false is no number
            fits = not item_types <= {int, float} or isinstance(item, (int, float)) and not isinstance(item, bool)
        if not fits:
            return f"item {i} is {item!r}, a {type(item).__name__}"
    return None


def check_value_types(values: dict, dataclass_types, where: str) -> None:
    """Raise naming every recipe value whose shape the field cannot take: a list or mapping for a single value,
    true/false for a number, or a list item of the wrong kind (a nested list, a number for a name). (The parser
    converts strings itself, but passes YAML lists and booleans through.)"""
    hints = {}
    for cls in dataclass_types:
        hints.update(typing.get_type_hints(cls))
    problems = []
    for key, value in values.items():
        if key not in hints or value is None:
            continue
        accepted = _accepted_types(hints[key])
        if object in accepted or str in accepted and not isinstance(value, (list, dict)):
            continue
        if isinstance(value, (list, tuple)):
            wrong = not accepted & {list, tuple}
            item_types = _item_types(hints[key])
            plain = item_types and item_types <= {str, int, float}
            why = _wrong_item(value, item_types) if plain and not wrong else None
            if why:
                kinds = " or ".join(sorted(t.__name__ for t in item_types))
                problems.append(f"{key!r} in {where} must be a list of {kinds}, but {why}")
                continue
        elif isinstance(value, dict):
            wrong = dict not in accepted
        else:
            wrong = isinstance(value, bool) and bool not in accepted
        if wrong:
            expected = " or ".join(sorted(t.__name__ for t in accepted if t is not type(None)))
            problems.append(f"{key!r} in {where} must be {expected}, got {value!r}")
    if problems:
        raise ValueError("; ".join(problems) + ".")


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
        values = load_recipe_file(recipe) or {}
        if not isinstance(values, dict):
            raise ValueError(f"recipe {recipe!r} must be a YAML mapping of config keys to values.")
        check_keys(values.keys(), dataclass_types, f"recipe {recipe}")
        check_value_types(values, dataclass_types, f"recipe {recipe}")
        config_args = ["--config", recipe]
    check_keys(_cli_keys(argv), dataclass_types, "the command line")
    parser = TrlParser(dataclass_types)
    return tuple(parser.parse_args_and_config(config_args + argv))

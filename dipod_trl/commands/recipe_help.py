"""`--help` of the recipe commands: a usage line that names the command, the keys grouped by the class that declares
them (the command's own keys first, then what it inherits from TRL and transformers), and the inherited keys the
trainer refuses listed apart, each with the value it must keep and why.

The arguments are TRL's own (`HfArgumentParser` turns each dataclass field into the option it parses), so the help
shows exactly the types, choices and defaults the parser takes.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing


def field_groups(dataclass_types) -> list[tuple[type, list[dataclasses.Field]]]:
    """`(class, fields)` pairs: each field under the class that first declared it (a subclass that only changes its
    default or help does not claim it), with the default and help the given type gives it. For each type in order,
    its own new fields come first, then the option groups it composes from its own package; all the types' own
    fields come before any base class's from another package."""
    groups = {}
    for index, cls in enumerate(dataclass_types):
        bases = [c for c in cls.__mro__ if dataclasses.is_dataclass(c)]
        package = cls.__module__.split(".")[0]
        for field in dataclasses.fields(cls):
            if field.init:
                origin = next(c for c in reversed(bases) if field.name in vars(c).get("__annotations__", {}))
                # option groups a type composes from its own package (DiPODConfig's fast-decoding, ELBO-sampling
                # and DiPOD-term groups) are its own keys: right after it, before the next type's
                own = origin.__module__.split(".")[0] == package
                depth = bases.index(origin)
                key = (0, index, depth) if own else (depth, 0, 0)
                groups.setdefault((key, origin), []).append(field)
    order = sorted(groups, key=lambda key: key[0])  # stable: the given order within each depth
    return [(origin, groups[key, origin]) for key, origin in order]


def recipe_help_parser(prog: str, usage: str, dataclass_types, refused: dict[str, tuple] | None = None):
    """An argument parser whose help lists the fields of `dataclass_types` in `field_groups` order; the fields named in
    `refused` (`{name: (value it must keep, why)}`) come last, in a group of their own."""
    from transformers import HfArgumentParser

    refused = refused or {}
    parser = HfArgumentParser(prog=prog, usage=usage)
    hints = {}
    for cls in dataclass_types:
        hints.update(typing.get_type_hints(cls))
    kept = []
    for owner, declared in field_groups(dataclass_types):
        group = parser.add_argument_group(f"{owner.__name__} ({owner.__module__.split('.')[0]})")
        for field in declared:
            if field.name in refused:
                kept.append(field)
            else:
                _add(group, field, hints)
    if kept:
        group = parser.add_argument_group(
            "refused: keys of the parent config this trainer does not support",
            "Setting one to anything but the value shown stops the run with an error that says why.",
        )
        for field in kept:
            value, why = refused[field.name]
            marked = copy.copy(field)
            help_text = f"REFUSED (must stay {value!r}): {why}."
            marked.metadata = types.MappingProxyType({**field.metadata, "help": help_text})
            _add(group, marked, hints)
    return parser


def _add(group, field: dataclasses.Field, hints: dict) -> None:
    """Add one field's option to `group`: the per-field step of `HfArgumentParser._add_dataclass_arguments`, which
    itself puts every field of a dataclass into one group."""
    from transformers import HfArgumentParser

    field.type = hints[field.name]  # resolved, as HfArgumentParser resolves it before adding a field
    HfArgumentParser._parse_dataclass_field(group, field)

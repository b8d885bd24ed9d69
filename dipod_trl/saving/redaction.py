"""Secrets stay out of the output folder: what a trainer saves of its arguments (`training_args.bin`, pickled by
`Trainer._save` into the run folder and every checkpoint) holds no token and no URL credentials.

transformers already hides fields named `*_token` (such as `hub_token`) in `TrainingArguments.to_dict()` and its repr,
which the loggers use; the pickle is the one place it keeps them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from contextlib import contextmanager

from reward_models.judge import redact_credentials


def without_secrets(args):
    """A shallow copy of a `TrainingArguments` with every `*_token` field None and every `*_url` field's credentials
    (`http://user:password@host`) replaced by `***`."""
    clean = copy.copy(args)  # not dataclasses.replace: __post_init__ would run again
    for f in dataclasses.fields(args):
        value = getattr(args, f.name, None)
        if not isinstance(value, str):
            continue
        if f.name.endswith("_token"):
            setattr(clean, f.name, None)
        elif f.name.endswith("_url"):
            setattr(clean, f.name, redact_credentials(value))
    return clean


@contextmanager
def saving_without_secrets(trainer):
    """Within the block, `trainer.args` is `without_secrets(trainer.args)`: wrap `Trainer._save` in it."""
    args = trainer.args
    trainer.args = without_secrets(args)
    try:
        yield
    finally:
        trainer.args = args


def hub_token_to_environment(args) -> None:
    """Hand a `hub_token` given in the arguments to huggingface_hub through `HF_TOKEN`, which it reads at every call,
    and drop it from the arguments: `Trainer` pickles its arguments into the output folder again before every push
    to the hub (`_push_from_checkpoint`), where `saving_without_secrets` does not reach."""
    token = getattr(args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        args.hub_token = None

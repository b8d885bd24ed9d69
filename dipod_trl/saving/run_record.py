"""Which run a checkpoint belongs to, and what happened to the run: `output_dir/dipod_run.json`.

A run gets an id when it starts. A fresh start (also with `overwrite_output_dir`) draws a new one; a resume from one of
the run's own checkpoints keeps it; a resume from another folder's checkpoint into a new or empty `output_dir` is a
fork: a new id, with the checkpoint it started from recorded. Each checkpoint's completion marker records the id, the
trainer and the settings it was saved with, so that
- `resume_from_checkpoint=true` resumes only checkpoints of the run `output_dir` holds now (another run's, left behind
  by `overwrite_output_dir` or copied in, are passed over with a warning naming them);
- rotation (`save_total_limit`) deletes only the run's own complete `checkpoint-N` folders, oldest step first;
- every setting changed on resume is recorded (old, new, at which step) here and in the model card.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings

RUN_FILE = "dipod_run.json"
COMPLETE_NAME = "checkpoint_complete.json"
LOCK_NAME = ".dipod.lock"
# What a run writes into output_dir before its first complete checkpoint (besides checkpoint folders cut short).
RUN_FILES = (RUN_FILE, LOCK_NAME, "README.md", "runs")
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def read_run(output_dir: str) -> dict | None:
    """The run record in `output_dir`, or None (no run started there, or one of a version without records)."""
    try:
        with open(os.path.join(output_dir, RUN_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "run_id" in record else None


def write_run(output_dir: str, record: dict) -> None:
    """Write the run record (under a temporary name, then renamed: a crash leaves the old or the new one)."""
    os.makedirs(output_dir, exist_ok=True)
    temporary = os.path.join(output_dir, RUN_FILE + ".tmp")
    with open(temporary, "w") as f:
        json.dump(record, f, indent=1, default=str)
    os.replace(temporary, os.path.join(output_dir, RUN_FILE))


def marker_run(checkpoint: str) -> dict:
    """What a checkpoint's marker says of the run that saved it (`id`, `trainer`, `settings`); {} for none."""
    try:
        with open(os.path.join(checkpoint, COMPLETE_NAME)) as f:
            run = json.load(f).get("run")
    except (OSError, ValueError, AttributeError):
        return {}
    return run if isinstance(run, dict) else {}


def inside(checkpoint: str, output_dir: str) -> bool:
    """Whether `checkpoint` is a folder directly in `output_dir`."""
    parent = os.path.dirname(os.path.realpath(checkpoint))
    return parent == os.path.realpath(output_dir)


def foreign(checkpoint: str, run_id: str | None) -> str | None:
    """Why `checkpoint` is another run's than `run_id`'s, or None (its own, or either side unrecorded)."""
    saved = marker_run(checkpoint).get("id")
    if run_id is None or saved is None or saved == run_id:
        return None
    return (f"it was saved by another run (run id {saved}) than the one {RUN_FILE} in its folder records ({run_id}): "
            "left behind by a run started over it with overwrite_output_dir, or copied in")


def new_run(forked_from: str | None = None) -> dict:
    record = {"run_id": uuid.uuid4().hex, "changes": []}
    if forked_from is not None:
        source = marker_run(forked_from).get("id")
        record["forked_from"] = {"checkpoint": os.path.abspath(forked_from), "run_id": source}
    return record


def run_for(output_dir: str, checkpoint: str | None) -> dict:
    """The record of the run about to start in `output_dir` from `checkpoint` (None: a fresh start)."""
    if checkpoint is None:
        return new_run()
    if not inside(checkpoint, output_dir):
        return new_run(forked_from=checkpoint)
    record = read_run(output_dir) or {"changes": []}
    record["run_id"] = marker_run(checkpoint).get("id") or record.get("run_id") or uuid.uuid4().hex
    return record


# ---------------------------------------------------------------------------------------------- a run cut short


def unfinished_run(output_dir: str) -> list[str] | None:
    """The entries of `output_dir` when all of them are what a run writes before its first complete checkpoint
    (checkpoint folders without a marker, the run record, the model card, logs); None when anything else is there."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(os.listdir(output_dir))
    for name in names:
        path = os.path.join(output_dir, name)
        cut_short = _CHECKPOINT_RE.match(name) and os.path.isdir(path) and not os.path.lexists(
            os.path.join(path, COMPLETE_NAME))
        if not (cut_short or name in RUN_FILES or name == RUN_FILE + ".tmp"):
            return None
    return names


def warn_fresh_start(output_dir: str, left: list[str]) -> None:
    shown = [name for name in left if name != LOCK_NAME]
    if shown:
        warnings.warn(f"output_dir {output_dir!r} holds only what a run cut short before its first complete checkpoint "
                      f"writes ({', '.join(shown)}): starting the run afresh there. A checkpoint folder cut short is "
                      "replaced when this run saves that step.", stacklevel=3)


# ---------------------------------------------------------------------------------------------- rotation


def own_complete_checkpoints(run_dir: str, run_id: str | None) -> list[str]:
    """The run's own complete `checkpoint-N` folders in `run_dir`, by N (a folder whose marker names no run counts as
    the run's when the run has no id, as before run records existed)."""
    found = []
    for name in os.listdir(run_dir):
        match, path = _CHECKPOINT_RE.match(name), os.path.join(run_dir, name)
        if match and os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(
                os.path.join(path, COMPLETE_NAME)) and marker_run(path).get("id") == run_id:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def rotate_checkpoints(run_dir: str, limit: int | None, run_id: str | None, best: str | None = None) -> list[str]:
    """Delete the run's oldest complete checkpoints (by step) beyond `limit`, keeping `best` as the Trainer does;
    nothing else in `run_dir` (checkpoint-best/, checkpoint-2-keep/, another run's folders) is touched."""
    if not limit or limit <= 0:
        return []
    own = own_complete_checkpoints(run_dir, run_id)
    best = os.path.realpath(best) if best else None
    if own and best in [os.path.realpath(p) for p in own]:
        newest = os.path.realpath(own[-1])
        own = [p for p in own if os.path.realpath(p) != best] + [p for p in own if os.path.realpath(p) == best]
        if limit == 1 and newest != best:
            limit = 2  # the best and the newest, as transformers does
    deleted = own[: max(len(own) - limit, 0)]
    for path in deleted:
        shutil.rmtree(path)
    return deleted

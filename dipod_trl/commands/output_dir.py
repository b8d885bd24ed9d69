"""Who may write into an output directory: one run at a time, and never over another run's results by accident.

As in the transformers example scripts, a run refuses an `output_dir` that already holds files unless it resumes
from a checkpoint there or `overwrite_output_dir` is set. A resume from another folder's checkpoint (a fork) needs a new
or empty `output_dir`: it would write its checkpoints and final model over the run already there. A folder holding only
what a run cut short before its first complete checkpoint writes counts as empty (a requeued job starts afresh).
While it runs it holds an exclusive lock on `output_dir/.dipod.lock` (`fcntl.flock`: the operating system drops it when
the process ends, even on a crash), so a second run started into the same directory stops at once instead of
overwriting the first one's checkpoints.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..saving.run_record import LOCK_NAME, inside, unfinished_run, warn_fresh_start


@dataclass
class OutputArguments:
    """What may be written over."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an output_dir that already holds files of an earlier run (its checkpoints and logs "
            "are overwritten). Without it such an output_dir is refused unless resume_from_checkpoint is set."
        },
    )


def _lock(path: str):
    import fcntl

    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(
            f"another run (process {owner}) is writing to {os.path.dirname(path)!r}. Wait for it to finish, or "
            "choose another output_dir."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_output_dir(output_dir: str, resuming, overwrite: bool) -> None:
    """Refuse an `output_dir` that holds an earlier run's files, unless resuming (`resuming`: the checkpoint, or a
    bool) from a checkpoint in it, or overwriting."""
    left = unfinished_run(output_dir)
    if left is not None:  # new, empty, or only what a run cut short before its first complete checkpoint wrote
        if not resuming:
            warn_fresh_start(output_dir, left)
        return
    existing = sorted(name for name in os.listdir(output_dir) if name != LOCK_NAME)
    shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
    if isinstance(resuming, str) and not inside(resuming, output_dir) and not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir!r} holds another run ({shown}), and --resume_from_checkpoint {resuming} is a "
            "checkpoint of another folder: resuming it here would write its checkpoints and final model over that "
            f"run's. Resume it in its own run folder (--output_dir {os.path.dirname(os.path.normpath(resuming))}), "
            "or continue it in a new or empty output_dir (a fork: the checkpoint it started from is recorded in "
            "dipod_run.json)."
        )
    if not (resuming or overwrite):
        raise FileExistsError(
            f"output_dir {output_dir!r} is not empty ({shown}). Resume the run there with "
            "--resume_from_checkpoint true, overwrite it with --overwrite_output_dir true, or choose another "
            "output_dir."
        )


def _refuse_a_file(output_dir: str) -> None:
    """Refuse an `output_dir` that is a file, or lies under one (no folder can be made there)."""
    path = os.path.abspath(output_dir)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(output_dir) else f"lies under {path!r}, which is a file"
        raise FileExistsError(f"output_dir {output_dir!r} {where}, not a directory. Choose a directory for the run "
                              "(a new or empty folder), or move the file away.")


@contextmanager
def claim_output_dir(output_dir: str, resuming=False, overwrite: bool = False, main_process: bool = True):
    """Hold `output_dir`'s lock for the duration of the block, after checking it (see `check_output_dir`; `resuming`:
    the checkpoint resumed from, or a bool).

    Only the main process (`main_process`) takes the lock: the other processes of the same launch only check.
    """
    _refuse_a_file(output_dir)
    if not main_process:
        check_output_dir(output_dir, resuming, overwrite)
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    handle = _lock(os.path.join(output_dir, LOCK_NAME))
    try:
        check_output_dir(output_dir, resuming, overwrite)
        yield
    finally:
        handle.close()

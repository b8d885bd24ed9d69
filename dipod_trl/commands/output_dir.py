"""Who may write into an output directory: one run at a time, and never over another run's results by accident.

As in the transformers example scripts, a run refuses an `output_dir` that already holds files unless it resumes
from a checkpoint there or `overwrite_output_dir` is set. While it runs it holds an exclusive lock on
`output_dir/.dipod.lock` (`fcntl.flock`: the operating system drops it when the process ends, even on a crash), so a
second run started into the same directory stops at once instead of overwriting the first one's checkpoints.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

LOCK_NAME = ".dipod.lock"


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


def check_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> None:
    """Refuse an `output_dir` that holds an earlier run's files, unless resuming or overwriting."""
    existing = sorted(name for name in os.listdir(output_dir) if name != LOCK_NAME) if os.path.isdir(output_dir) else []
    if existing and not (resuming or overwrite):
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise FileExistsError(
            f"output_dir {output_dir!r} is not empty ({shown}). Resume the run there with "
            "--resume_from_checkpoint true, overwrite it with --overwrite_output_dir true, or choose another "
            "output_dir."
        )


@contextmanager
def claim_output_dir(output_dir: str, resuming: bool = False, overwrite: bool = False, main_process: bool = True):
    """Hold `output_dir`'s lock for the duration of the block, after checking it (see `check_output_dir`).

    Only the main process (`main_process`) takes the lock: the other processes of the same launch only check.
    """
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

"""Checkpoints that resume exactly: complete or absent, which one to resume from, and whether its files are whole.

A checkpoint is complete when `checkpoint_complete.json` is in it: written last, after every process wrote its files,
it lists each file with its size and SHA-256, and the run that wrote it (`dipod_trl.saving.run_record`). A run killed
while saving, or a full disk, leaves a folder without it (or with files shorter than listed); a file changed since
(same-size garbage, NaN bytes) no longer matches its checksum. `resume_from_checkpoint=true` and eval sweeps pass over
such folders with a warning, and older checkpoints of the run are rotated away only once the new one is complete.
Every file is loaded with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain values, never code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
import zipfile
from contextlib import contextmanager

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .checkpoint_marker import checkpoint_problem, mark_complete
from .resume_settings import training_settings
from .run_record import COMPLETE_NAME, foreign, inside, read_run, rotate_checkpoints, unfinished_run, warn_fresh_start

OPTIMIZER_NAMES = ("optimizer.pt", "optimizer.bin")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


# ---------------------------------------------------------------------------------------------- complete or absent


def begin_checkpoint(directory: str) -> None:
    """Clear `directory` before a save writes into it: a folder left there (cut short by a crash, or a later step of a
    run since resumed from an earlier checkpoint) must not lend the new checkpoint stale files or its marker."""
    if os.path.lexists(directory):
        shutil.rmtree(directory)


@contextmanager
def complete_checkpoint(trainer, trial=None):
    """Around `Trainer._save_checkpoint`: yields the folder it writes; marks it complete (with the run's id and
    settings) once every process wrote its files, and only then rotates the run's own old checkpoints away
    (`save_total_limit`, by step), so a crash never leaves fewer complete checkpoints than before."""
    run_dir = trainer._get_output_dir(trial=trial)
    checkpoint = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")
    if trainer.args.should_save:
        begin_checkpoint(checkpoint)
    trainer.accelerator.wait_for_everyone()  # no process writes before the old folder is gone
    limit = trainer.args.save_total_limit
    trainer.args.save_total_limit = None  # the Trainer would rotate before the checkpoint is complete
    try:
        yield checkpoint
    except Exception as error:  # torch reports a full disk as "unexpected pos ..."
        raise RuntimeError(
            f"saving {checkpoint} failed ({type(error).__name__}: {error}); {_free_space(run_dir)}. The folder is left "
            "incomplete: resume_from_checkpoint=true passes over it, to the last complete checkpoint."
        ) from error
    finally:
        trainer.args.save_total_limit = limit
    trainer.accelerator.wait_for_everyone()  # every process's files (RNG, generation state, shards) are written
    if trainer.args.should_save:
        run = getattr(trainer, "dipod_run", None)
        run_id = None if run is None else run["run_id"]
        mark_complete(checkpoint, None if run is None else {
            "id": run_id, "trainer": type(trainer).__name__, "settings": training_settings(trainer.args)})
        rotate_checkpoints(run_dir, limit, run_id, trainer.state.best_model_checkpoint)


def _free_space(directory: str) -> str:
    free = shutil.disk_usage(directory).free
    return f"the disk holding it has {free / 2**20:.1f} MiB free" + (" (full?)" if free < 2**30 else "")


def numbered_checkpoints(output_dir: str) -> list[str]:
    """The `checkpoint-N` folders in `output_dir`, by N."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))]
    paths = [os.path.join(output_dir, name) for _, name in sorted(found)]
    return [path for path in paths if os.path.isdir(path)]


def last_complete_checkpoint(output_dir: str, before: str | None = None, warn: bool = True) -> str | None:
    """The complete `checkpoint-N` of the run `output_dir` holds with the highest N (below `before`'s N when given),
    warning for each incomplete or other run's one passed over."""
    candidates = numbered_checkpoints(output_dir)
    if before is not None:
        candidates = [c for c in candidates if _step(c) < _step(before)]
    run = read_run(output_dir)
    for checkpoint in reversed(candidates):
        problem, kind = checkpoint_problem(checkpoint), "incomplete "
        if problem is None:
            problem, kind = foreign(checkpoint, run and run["run_id"]), ""
        elif "SHA-256" in problem:
            kind = "damaged "
        if problem is None:
            return checkpoint
        if warn:
            warnings.warn(f"skipping {kind}checkpoint {checkpoint}: {problem}.", stacklevel=2)
    return None


def weights_problem(directory: str) -> str | None:
    """Why the model in `directory` cannot be evaluated, or None. A checkpoint with a marker must match it; a folder
    without one (a model saved by other means, or a save cut short) needs a config and readable weights."""
    if os.path.isfile(os.path.join(directory, COMPLETE_NAME)):
        return checkpoint_problem(directory)
    names = os.listdir(directory)
    if not {"config.json", "adapter_config.json"} & set(names):
        return "it has no config.json or adapter_config.json (a save cut short?)"
    weights = [name for name in sorted(names) if name.endswith((".safetensors", ".bin"))]
    if not weights:
        return "it has no weights file (a save cut short?)"
    for name in weights:
        problem = _file_problem(os.path.join(directory, name))
        if problem is not None:
            return f"{os.path.join(directory, name)} {problem}"
    return None


def _step(checkpoint: str) -> int:
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(checkpoint)))
    return int(match.group(1)) if match else 1 << 62


def resume_instead(checkpoint: str) -> str:
    """What to resume from instead of a damaged `checkpoint`."""
    previous = last_complete_checkpoint(os.path.dirname(os.path.normpath(checkpoint)), before=checkpoint, warn=False)
    if previous is None:
        return "There is no earlier complete checkpoint next to it: start the run again."
    return f"Resume from {previous}, the last complete checkpoint before it (--resume_from_checkpoint {previous})."


def check_checkpoint_files(checkpoint: str) -> None:
    """Raise naming the first file of `checkpoint` that cannot be read (cut short, or not what its name says), and the
    checkpoint to resume from instead: safetensors headers, torch archives and JSON files, in every subfolder."""
    for root, _, names in sorted(os.walk(checkpoint)):
        for name in sorted(names):
            path = os.path.join(root, name)
            problem = _file_problem(path)
            if problem is not None:
                raise ValueError(f"{path} {problem}; it was probably cut short while being written. "
                                 f"{resume_instead(checkpoint)}")


def _file_problem(path: str) -> str | None:
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt"):  # checks the header and that the file covers every tensor
                pass
        elif path.endswith(TORCH_SUFFIXES):
            with zipfile.ZipFile(path):  # torch.save's archive; its index is at the end, so a cut file has none
                pass
        elif path.endswith(".json"):
            with open(path) as f:
                json.load(f)
    except Exception as error:  # safetensors, zipfile and json each raise their own types
        kind = "JSON" if path.endswith(".json") else "safetensors" if path.endswith(".safetensors") else "torch"
        return f"is not a readable {kind} file ({type(error).__name__}: {error})"
    return None


def load_checkpoint_file(path: str, **kwargs):
    """`torch.load(path, weights_only=True)`, with errors that name the file: a file holding Python objects beyond
    tensors and plain values is refused (loading it could run code), a cut one is reported as such."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError:
        raise ValueError(_refusal(path)) from None
    except Exception as error:  # RuntimeError for a damaged archive
        raise ValueError(
            f"{path} cannot be read ({error}); it was probably cut short. {resume_instead(os.path.dirname(path))}"
        ) from error


@contextmanager
def refusing_code(checkpoint: str, names: list[str]):
    """Around a Trainer loader of the files `names` (it loads with `weights_only=True`): its refusal of a file that
    would run code, as an error naming that file."""
    try:
        yield
    except pickle.UnpicklingError:
        from transformers.trainer_pt_utils import safe_globals  # the numpy types the Trainer's RNG files hold

        paths = [os.path.join(checkpoint, n) for n in names if os.path.isfile(os.path.join(checkpoint, n))]
        for path in paths:
            try:
                with safe_globals():
                    torch.load(path, weights_only=True, mmap=True)
            except pickle.UnpicklingError:
                raise ValueError(_refusal(path)) from None
        raise


def _refusal(path: str) -> str:
    return (
        f"refusing to load {path}: it holds Python objects other than tensors and plain values, which could run code "
        "when loaded. dipod-trl writes none (control checkpoints from before version 0.2 held numpy RNG states: "
        f"re-create those). Do not resume from checkpoints of unknown origin. {resume_instead(os.path.dirname(path))}"
    )


# ---------------------------------------------------------------------------------------------- which to resume


def resolve_resume(value, output_dir: str) -> str | None:
    """The checkpoint directory a `resume_from_checkpoint` value means, or None for a fresh run.

    `true` (a bool, or the string a recipe or command line gives) means the last complete `checkpoint-N` in
    `output_dir` (incomplete ones are passed over with a warning naming them); `false` or empty means none; anything
    else is a path, which must be complete too (one without a marker, e.g. from an older version, is checked file by
    file, with a warning).
    """
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "none"):
        return None
    if value is True or text.lower() in ("true", "yes", "1", "last"):
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            found = numbered_checkpoints(output_dir)
            left = unfinished_run(output_dir)
            if found and left is not None:  # killed during its first save (a requeued job): nothing to resume
                warn_fresh_start(output_dir, left)
                return None
            raise FileNotFoundError(
                f"resume_from_checkpoint=true: no complete checkpoint-N directory in output_dir {output_dir!r} to "
                "resume from" + (f" (passed over, see the warnings: {', '.join(found)})" if found else "") + ". Check "
                "output_dir, start "
                "a fresh run without resume_from_checkpoint, or give a checkpoint written before completion markers "
                "existed by its path."
            )
    else:
        checkpoint = text
        if not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"resume_from_checkpoint: no such checkpoint directory {checkpoint!r}.")
        problem = checkpoint_problem(checkpoint)
        run = read_run(output_dir) if inside(checkpoint, output_dir) else None
        if problem is None and run is not None and foreign(checkpoint, run["run_id"]):
            raise ValueError(
                f"refusing to resume {checkpoint}: {foreign(checkpoint, run['run_id'])}. Resuming it would continue "
                "another run (its optimizer, schedule and settings) as this one. Resume this run's own checkpoints "
                f"(--resume_from_checkpoint true), or start a new run from its weights (--model_name_or_path "
                f"{checkpoint}) in a new output_dir."
            )
        if problem is not None and os.path.isfile(os.path.join(checkpoint, COMPLETE_NAME)):
            raise ValueError(f"checkpoint {checkpoint} is damaged: {problem}. {resume_instead(checkpoint)}")
        if problem is not None:
            if not any(os.path.isfile(os.path.join(checkpoint, n)) for n in ("trainer_state.json", "trainer_state.pt")):
                raise FileNotFoundError(f"checkpoint {checkpoint} is incomplete: {problem}, and it has no trainer "
                                        f"state. {resume_instead(checkpoint)}")
            warnings.warn(f"checkpoint {checkpoint} may be incomplete: {problem}. Its files are checked one by one; "
                          f"if it was cut short: {resume_instead(checkpoint)}", stacklevel=2)
    check_checkpoint_files(checkpoint)
    return checkpoint


def check_safetensors(directory: str) -> None:
    """Raise naming the first `*.safetensors` file in `directory` that cannot be read (e.g. cut short by a crash)."""
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(directory, name)
        problem = _file_problem(path)
        if problem is not None:
            raise ValueError(
                f"{path} {problem}; it was probably cut short while being written. Use another checkpoint, or "
                "re-create this one."
            )


def check_optimizer_state(checkpoint: str) -> None:
    """Refuse a checkpoint without optimizer state: resuming would silently restart Adam from fresh moments."""
    if not any(os.path.isfile(os.path.join(checkpoint, name)) for name in OPTIMIZER_NAMES):
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} has no optimizer.pt (saved with save_only_model=True, or cut short), so it "
            "cannot resume the run exactly. Resume from a complete checkpoint, or start a new run from its weights "
            "(model_name_or_path: the checkpoint directory)."
        )

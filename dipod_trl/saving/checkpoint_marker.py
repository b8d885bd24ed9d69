"""The completion marker of a checkpoint: `checkpoint_complete.json`, written last, listing each file with its size and
SHA-256 and the run that wrote it; and the check that a folder's files are still the ones it lists.

The checksums are computed once every file is flushed (from the page cache, just written) and verified when a
checkpoint is resumed or evaluated. `benchmarks/bench_checkpoint_checksums.py` measures what they cost.
"""

from __future__ import annotations

import hashlib
import json
import os

from .run_record import COMPLETE_NAME


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, read in large blocks (hashlib releases the GIL, so files hash in parallel threads)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checksums(paths: list[str]) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, max(len(paths), 1))) as pool:
        return list(pool.map(file_sha256, paths))


def mark_complete(directory: str, run: dict | None = None) -> None:
    """Write `checkpoint_complete.json` once every file of the checkpoint is on disk: each file's size and SHA-256,
    and `run` (the run that wrote it and its settings, see `dipod_trl.saving.run_record`).

    The files are flushed to disk first and the marker is written under a temporary name and renamed, so that a
    crash at any moment leaves either no marker or a marker whose files are all there.
    """
    paths = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if name.startswith(COMPLETE_NAME):
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            paths.append(path)
    names = [os.path.relpath(path, directory) for path in paths]
    files = {name: os.path.getsize(path) for name, path in zip(names, paths)}
    marker = {"files": dict(sorted(files.items())), "sha256": dict(sorted(zip(names, _checksums(paths))))}
    if run is not None:
        marker["run"] = run
    temporary = os.path.join(directory, COMPLETE_NAME + ".tmp")
    with open(temporary, "w") as f:
        json.dump(marker, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, os.path.join(directory, COMPLETE_NAME))
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the rename itself
    finally:
        os.close(descriptor)


def checkpoint_problem(directory: str) -> str | None:
    """Why `directory` is not a complete checkpoint, or None when its marker is there and every file it lists is there
    with its size and (in markers that list them) its SHA-256."""
    marker = os.path.join(directory, COMPLETE_NAME)
    if not os.path.isfile(marker):
        return f"it has no {COMPLETE_NAME}, so its save did not finish (the run was killed or the disk filled)"
    try:
        with open(marker) as f:
            content = json.load(f)
        files, sums = content["files"], content.get("sha256", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"its {COMPLETE_NAME} cannot be read ({error})"
    for name, size in files.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return f"{path} is missing"
        if os.path.getsize(path) != size:
            return f"{path} has {os.path.getsize(path)} bytes where {size} were saved (cut short or changed since)"
    return _checksum_problem(directory, {name: sums[name] for name in files if name in sums})


_VERIFIED: set = set()  # (folder, each file's name, size, mtime and checksum) found whole in this process


def _checksum_problem(directory: str, sums: dict) -> str | None:
    """The first file whose SHA-256 is not the one saved; a folder verified before, its files unchanged since (same
    sizes and modification times), is not read again (the command line and the trainer both check a resume)."""
    paths = {name: os.path.join(directory, name) for name in sorted(sums)}
    key = (os.path.realpath(directory), *((name, os.stat(path).st_size, os.stat(path).st_mtime_ns, sums[name])
                                          for name, path in paths.items()))
    if key in _VERIFIED:
        return None
    for name, digest in zip(paths, _checksums(list(paths.values()))):
        if digest != sums[name]:
            return (f"{paths[name]} does not match the SHA-256 saved with it: its bytes changed since the save "
                    "(disk or copy damage, or edited)")
    _VERIFIED.add(key)
    return None

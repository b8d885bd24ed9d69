"""The JSON-lines record store of an evaluation: one record per example, appended as soon as its batch is done.

A record carries its run's setup (model, task, split, prompt layout, sampler settings, seed) and its example index and
question; an evaluation reuses exactly the records of its own setup and examples, so an interrupted run resumes without
redoing work, while another model, other sampler settings or another dataset never borrow its results. Under
`accelerate launch` each process writes a part file, which the main process merges.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os


def with_fast_decoding(run: dict | None, fast_decoding: dict | None) -> dict | None:
    """The run's setup plus the fast-decoding options that are on: records of fast and exact decoding never mix,
    while exact decoding keeps the setup (and records) it always had."""
    on = {name: value for name, value in (fast_decoding or {}).items() if value is not None}
    return {**(run or {}), **on} if on else run


def model_name(path_or_id: str) -> str:
    """How a record names a model: the absolute path of a local directory, else the hub id."""
    return os.path.abspath(path_or_id) if path_or_id and os.path.isdir(path_or_id) else path_or_id


def model_name_of(model) -> str:
    """`model_name` of a loaded model, from the directory or hub id it was loaded from."""
    return model_name(str(getattr(model, "name_or_path", "") or
                          getattr(getattr(model, "config", None), "_name_or_path", "")))


def setup_key(setup: dict) -> str:
    """A short stable hash of a run's setup (the file name's tag, and the test of which records belong to a run)."""
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def repair_partial_line(path: str) -> None:
    """Cut a last line that an interruption left without its newline, so the next record starts on a line of its own."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_records(path: str, key: str) -> dict[int, dict]:
    """Whole records of the run `key` in `path` and its unmerged part files, by example index."""
    records = {}
    for name in [path, *sorted(glob.glob(glob.escape(path) + ".part*"))]:
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for number, line in enumerate(f, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by an interruption: redone
                if isinstance(record, dict) and record.get("setup_key") == key:
                    index = record.get("index")
                    if not isinstance(index, int) or isinstance(index, bool):
                        raise ValueError(
                            f"{name}, line {number}: a record of this run has index={index!r}, not an example "
                            "number; the file was edited or written by another program. Delete that line (its "
                            "example is then evaluated again) or the file."
                        )
                    records[index] = record
    return records


def run_setup(model_name: str, *, gen_length, steps, sampler, num_generations, seed, scorings,
              run: dict | None = None) -> dict:
    """What identifies a run's records: the model, the sampler settings (`sampler`: a `SamplerArguments`), the seed,
    the scorings, and `run` (task, split, prompt layout...). Guidance enters only when on, so that records without it
    keep the setup they always had."""
    guidance = {"cfg_scale": sampler.cfg_scale} if sampler.cfg_scale else {}
    return {"model": model_name, "gen_length": gen_length, "block_length": sampler.block_length, "steps": steps,
            "temperature": sampler.temperature, "remasking": sampler.remasking, "num_generations": num_generations,
            "seed": seed, "scorings": sorted(scorings), **guidance, **(run or {})}


def finished_records(path: str, key: str, questions: list[str]) -> dict[int, dict]:
    """The records of run `key` for these examples: index in range and the same question."""
    return {i: r for i, r in read_records(path, key).items() if i < len(questions) and r["question"] == questions[i]}


def merge_part_files(path: str) -> None:
    """Append the processes' part files to the main file and remove them (main process only)."""
    parts = sorted(glob.glob(glob.escape(path) + ".part*"))
    if not parts:
        return
    repair_partial_line(path)
    with open(path, "a") as out:
        for part in parts:
            repair_partial_line(part)
            with open(part) as f:
                out.write(f.read())
    for part in parts:
        os.remove(part)


def question_text(prompt) -> str:
    """The last user message of a conversational prompt (a prefilled answer opening follows it), or the text."""
    if isinstance(prompt, list):
        return next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    return prompt

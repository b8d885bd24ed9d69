"""Reading a task's data: a hub id (`datasets.load_dataset`) or a local file / `save_to_disk` directory, mapped to the
task's typed columns."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable

from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset, load_from_disk

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

TEXT = Value("string")
PROMPT = List({"role": TEXT, "content": TEXT})


def _looks_local(source: str) -> bool:
    """A path the user meant as local: it exists, has a data-file suffix, or starts like a path."""
    return (
        os.path.exists(source)
        or os.path.splitext(source)[1].lower() in _LOCAL_FORMATS
        or source.startswith(("/", "./", "../", "~"))
    )


def load_source(source: str, split: str, hub_config: str | None = None) -> Dataset:
    """Read `source` as a `Dataset`: a hub id with `load_dataset`, or a local file / `save_to_disk` directory.

    A local file is one split by itself, so `split` only selects within hub datasets and saved `DatasetDict`s.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source: expected a hub id or a local path, got {type(source).__name__}.")
    source = os.fspath(source)
    if not _looks_local(source):
        return load_dataset(source, hub_config, split=split)
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        raise ValueError(f"source: local path {source!r} does not exist.")
    if os.path.isdir(path):
        return _select_split(load_from_disk(path), split, source)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _LOCAL_FORMATS:
        raise ValueError(
            f"source: unsupported file type {suffix!r} for {source!r}; use one of {sorted(_LOCAL_FORMATS)}."
        )
    if suffix != ".parquet":
        check_text_file(path, source)
    if suffix == ".csv":
        return _read_csv_as_strings(path)
    return load_dataset(_LOCAL_FORMATS[suffix], data_files=path, split="train")


def check_text_file(path: str, source: str) -> None:
    """Refuse a data file that holds no rows, or that is not UTF-8 (the readers decode rows only when they are used,
    which would be inside training, after the model loaded), naming the line of the first undecodable byte."""
    import codecs
    import itertools

    decoder, line, blank = codecs.getincrementaldecoder("utf-8")(), 1, True
    with open(path, "rb") as f:
        for block in itertools.chain(iter(lambda: f.read(1 << 20), b""), [None]):  # None: the end
            try:
                text = decoder.decode(block or b"", final=block is None)
            except UnicodeDecodeError as error:  # error.object: the block, after bytes held over from the last one
                line += error.object[: error.start].count(b"\n")
                raise ValueError(
                    f"source: {source!r} is not UTF-8 text: line {line} holds the byte "
                    f"{error.object[error.start]:#04x}, which UTF-8 does not allow there (the file is likely Latin-1 "
                    f"or Windows-1252). Convert it, e.g. `iconv -f latin1 -t utf-8 {source} > "
                    f"utf8-{os.path.basename(source)}`, and point dataset_source at the result."
                ) from None
            line += text.count("\n")
            blank = blank and not text.strip()
    if blank:
        raise ValueError(f"source: {source!r} is empty (no rows to read): check the path, or the step that writes "
                         "the file.")


def _select_split(data, split: str, source: str) -> Dataset:
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"split: {source!r} has the splits {sorted(data)}, not {split!r}.")
        return data[split]
    return data


def _read_csv_as_strings(path: str) -> Dataset:
    """A CSV read with every column as text: type inference would turn "0103..." puzzles into numbers."""
    import pandas as pd

    return Dataset.from_pandas(pd.read_csv(path, dtype=str, keep_default_na=False), preserve_index=False)


def column(data: Dataset, names: tuple[str, ...], source: str, task: str) -> str:
    """The first of `names` that `data` has (case-insensitive), else a `ValueError` naming what is missing."""
    by_lower = {c.lower(): c for c in data.column_names}
    for name in names:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    raise ValueError(
        f"source: {source!r} has no {' / '.join(repr(n) for n in names)} column, which {task} needs; "
        f"its columns are {data.column_names}."
    )


def to_task_columns(data: Dataset, build: Callable[[dict], dict], features: Features) -> Dataset:
    """Map each row to the task's columns, typed explicitly, and drop every other column.

    Explicit features matter: a mapped column that reuses an input name would otherwise keep the input's type
    (a CSV's "98" stays text, a JSON puzzle stays an int without its leading zeros).
    """
    return data.map(build, remove_columns=data.column_names, features=features)


def int_list(value, source: str) -> list[int]:
    """A row's numbers as ints; CSV files hold them as text like "[3, 7, 25]"."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError(f"source: {source!r} has a numbers value that is not a list: {value!r}.") from None
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"source: {source!r} has a numbers value that is not a list of integers: {value!r}.") from None


def integer(value, source: str) -> int:
    """A row's target as an int ("98" in CSV files)."""
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"source: {source!r} has a target that is not an integer: {value!r}.") from None

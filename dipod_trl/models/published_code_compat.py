"""Saved LLaDA and Dream folders that the published modeling code reads under transformers 4.x, as well as ours.

A folder is loaded by the published code through `config.json`'s `auto_map` (`AutoModel.from_pretrained(dir,
trust_remote_code=True)`) and by transformers 4.x's tokenizer classes through `tokenizer_config.json`. Saving from
this package would otherwise break both: our classes write back the `auto_map` they loaded without the modeling files
it names (a stale reference: 4.x fails looking for `configuration_llada.py`), and transformers 5 names the generic
fast tokenizer `TokenizersBackend`, a class 4.x does not have. So after each save:

- every `auto_map` reference is resolved: the module file (and the modules it imports) is copied from where the
  model was loaded (a local folder or a hub repository that ships it), else the reference points at the family's
  published code on the hub (`GSAI-ML/LLaDA-8B-Instruct--modeling_llada.LLaDAModelLM`, transformers' syntax for code
  in another repository);
- `generation_config.json`, which the published Dream code reads when loading, is kept from the source (or written
  from the config's special ids);
- `tokenizer_config.json` names a tokenizer class 4.x has (LLaDA's `PreTrainedTokenizerFast`, Dream's
  `Qwen2Tokenizer`) and no remote tokenizer code (both are standard classes), and drops keys only transformers 5
  writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from transformers import Qwen2Tokenizer, TokenizersBackend
from transformers.utils import cached_file

CONFIG_NAME, TOKENIZER_CONFIG_NAME = "config.json", "tokenizer_config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# tokenizer_config.json keys that transformers 5 writes and 4.x would pass to the tokenizer as unknown arguments
V5_ONLY_TOKENIZER_KEYS = ("backend", "is_local", "local_files_only")


def _module_files(auto_map: dict) -> set[str]:
    """The module files `auto_map` references name (`module.Class` or `repo--module.Class`), local ones only."""
    refs = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value]) if r]
    return {ref.rsplit(".", 1)[0] + ".py" for ref in refs if "--" not in ref}


def _fetch_module(source: str | None, filename: str) -> str | None:
    """The path of the file `filename` in the folder or hub repository `source`, or None where it is not to be had."""
    if not source:
        return None
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        return path if os.path.isfile(path) else None
    try:
        return cached_file(source, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):  # not a repository id
        return None


def _relative_imports(path: str) -> set[str]:
    """The package-relative modules a module file imports (`from .generation_utils import ...`), as file names."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    names = re.findall(r"^\s*from\s+\.(\w+)\s+import", text, flags=re.MULTILINE)
    names += re.findall(r"^\s*import\s+\.(\w+)\s*$", text, flags=re.MULTILINE)
    return {f"{name}.py" for name in names}


def _copy_modules(save_directory: str, source: str | None, filenames: set[str]) -> bool:
    """Copy `filenames` and what they import from `source` into `save_directory`; False when one cannot be had."""
    pending, seen = set(filenames), set()
    while pending:
        filename = pending.pop()
        seen.add(filename)
        target = os.path.join(save_directory, filename)
        found = target if os.path.isfile(target) else _fetch_module(source, filename)
        if found is None:
            return False
        if found != target:
            shutil.copyfile(found, target)
        pending |= _relative_imports(target) - seen
    return True


def _point_at_repo(auto_map: dict, code_repo: str) -> dict:
    def ref(value):
        return value if not value or "--" in value else f"{code_repo}--{value}"

    return {key: [ref(v) for v in value] if isinstance(value, list) else ref(value) for key, value in auto_map.items()}


def complete_for_published_code(save_directory: str, config, source: str | None, code_repo: str) -> None:
    """Make `save_directory` loadable by the published code: every `auto_map` entry of its config.json resolvable
    (module files copied from `source`, where the model was loaded from; else all entries pointing at `code_repo`
    on the hub), and a generation_config.json."""
    generation_config = os.path.join(save_directory, GENERATION_CONFIG_NAME)
    if not os.path.isfile(generation_config):
        found = _fetch_module(source, GENERATION_CONFIG_NAME)
        if found is not None:
            shutil.copyfile(found, generation_config)
        else:
            ids = {key: getattr(config, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
            with open(generation_config, "w") as f:
                f.write(json.dumps(ids, indent=2) + "\n")
    path = os.path.join(save_directory, CONFIG_NAME)
    with open(path) as f:
        saved = json.load(f)
    auto_map = saved.get("auto_map")
    if not auto_map or _copy_modules(save_directory, source, _module_files(auto_map)):
        return
    saved["auto_map"] = _point_at_repo(auto_map, code_repo)
    with open(path, "w") as f:
        f.write(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def make_tokenizer_config_portable(save_directory: str, tokenizer_class: str) -> None:
    """Rewrite `save_directory/tokenizer_config.json` for transformers 4.x: `tokenizer_class`, no remote tokenizer
    code whose file the folder lacks, no transformers-5-only keys."""
    path = os.path.join(save_directory, TOKENIZER_CONFIG_NAME)
    with open(path) as f:
        config = json.load(f)
    config["tokenizer_class"] = tokenizer_class
    for key in V5_ONLY_TOKENIZER_KEYS:
        config.pop(key, None)
    auto_map = config.get("auto_map")
    if auto_map and any(not os.path.isfile(os.path.join(save_directory, f)) for f in _module_files(auto_map)):
        del config["auto_map"]  # the standard class named above reads these files without remote code
    with open(path, "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


class PortableTokenizerMixin:
    """Saves a `tokenizer_config.json` that transformers 4.x reads, naming `published_tokenizer_class`."""

    published_tokenizer_class: str

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        make_tokenizer_config_portable(str(save_directory), self.published_tokenizer_class)
        return files


class LLaDATokenizer(PortableTokenizerMixin, TokenizersBackend):
    """LLaDA's tokenizer (`tokenizer.json`, the standard fast tokenizer), saved under 4.x's name for that class."""

    published_tokenizer_class = "PreTrainedTokenizerFast"


class DreamTokenizer(PortableTokenizerMixin, Qwen2Tokenizer):
    """Dream's tokenizer: its published remote-code `DreamTokenizer` is a copy of Qwen2's, so the standard Qwen2
    tokenizer reads its files, and the saved folder names `Qwen2Tokenizer` instead of the remote code."""

    published_tokenizer_class = "Qwen2Tokenizer"

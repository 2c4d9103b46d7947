"""LLaMA-Factory's dataset registry (`dataset_info.json`) as dataforge build inputs.

A user coming from LLaMA-Factory already describes each dataset once: its file (or hub id), its
`formatting` (alpaca or sharegpt), the `columns` it uses and, for ShareGPT, the `tags` that name the
turn keys and roles. `translate` turns the named entries into `InputSpec` mappings (`inputs:` of a
BuildConfig), one per dataset, with the dataset's name as the source name.

Nothing is dropped quietly: a key this translation does not know, or knows but cannot honour
(images, a ModelScope hub, `num_samples` sampling), is a ConfigError naming the dataset and the key.
`ranking: true` datasets become `format: pairwise` inputs of a `task: preference` build (the
preference formats' own reader checks their fields).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataforge.errors import ConfigError

# LLaMA-Factory column name -> dataforge canonical field, per formatting.
_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                   "system": "system"}
_SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
_PREFERENCE_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}
# Keys we know but cannot honour, with the reason given to the user.
_UNSUPPORTED = {
    "ms_hub_url": "ModelScope hub datasets are not read; download the files and use file_name",
    "om_hub_url": "Modelers hub datasets are not read; download the files and use file_name",
    "script_url": "dataset loading scripts are not run; save the data as a file and use file_name",
    "cloud_file_name": "cloud storage paths are not read; copy the file locally and use file_name",
    "num_samples": "sampling N records with replacement is not a build step; use `limit` (the first N records) "
                   "or `mix.total` after translating",
    "images": "dataforge builds text-only data; a record whose image is dropped would train on text about "
              "what the model never sees",
    "videos": "dataforge builds text-only data",
    "audios": "dataforge builds text-only data",
    "kto_tag": "KTO-labelled data is not translated; write the input by hand with the preference formats",
}
_KNOWN = {"hf_hub_url", "file_name", "file_sha1", "subset", "split", "folder", "ranking", "formatting", "columns",
          "tags", *_UNSUPPORTED}
_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
_TAG_ROLES = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool",
              "function_tag": "assistant", "system_tag": "system"}


def read_registry(path: Path) -> dict[str, Any]:
    """The parsed `dataset_info.json`; a missing or malformed file is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"--from-llamafactory: file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object of dataset entries, got {type(data).__name__}")
    return data


def translate(path: Path, names: list[str]) -> tuple[list[dict], dict[str, Any]]:
    """(inputs, top-level settings) for the datasets `names` of the registry at `path`.

    Relative `file_name`s resolve against the registry's folder, as LLaMA-Factory's `dataset_dir`."""
    registry = read_registry(path)
    if not names:
        raise ConfigError(f"--dataset: name the datasets of {path} to build (available: {', '.join(registry)})")
    missing = [n for n in names if n not in registry]
    if missing:
        raise ConfigError(f"--dataset: {', '.join(missing)} not in {path} (available: {', '.join(registry)})")
    problems: list[str] = []
    inputs = [_entry(name, registry[name], path.resolve().parent, problems) for name in names]
    if problems:
        raise ConfigError(f"{path}: cannot translate:\n  " + "\n  ".join(problems))
    settings = {"task": "preference"} if any(i.get("format") == "pairwise" for i in inputs) else {}
    if settings and not all(i.get("format") == "pairwise" for i in inputs):
        raise ConfigError(f"{path}: datasets {', '.join(names)} mix ranking and non-ranking entries; a build is "
                          "either SFT or preference data, so build them separately")
    return inputs, settings


def _entry(name: str, entry: Any, folder: Path, problems: list[str]) -> dict:
    if not isinstance(entry, dict):
        problems.append(f"{name}: expected an object, got {type(entry).__name__}")
        return {}
    unknown = sorted(set(entry) - _KNOWN)
    problems += [f"{name}.{k}: unknown key (known: {', '.join(sorted(_KNOWN))})" for k in unknown]
    problems += [f"{name}.{k}: not supported: {why}" for k, why in _UNSUPPORTED.items() if k in entry]
    spec: dict[str, Any] = {"source": name}
    if "hf_hub_url" in entry:
        spec["path"] = entry["hf_hub_url"]
        if entry.get("folder"):
            problems.append(f"{name}.folder: not supported: hub sub-folders are not read; save the files locally")
    elif "file_name" in entry:
        spec["path"] = _local(folder, str(entry["file_name"]))
    elif not any(k in entry for k in _UNSUPPORTED):
        problems.append(f"{name}: needs file_name or hf_hub_url")
    for key in ("subset", "split"):
        if entry.get(key):
            spec[key] = entry[key]
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        problems.append(f"{name}.formatting: unknown formatting {formatting!r}; expected alpaca or sharegpt")
        return spec
    ranking = bool(entry.get("ranking", False))
    columns = entry.get("columns") or {}
    known_columns = {**(_ALPACA_COLUMNS if formatting == "alpaca" else _SHAREGPT_COLUMNS),
                     **(_PREFERENCE_COLUMNS if ranking else {})}
    mapped: dict[str, str] = {}
    for col, theirs in columns.items():
        if col in _UNSUPPORTED:
            continue   # reported above, as a key of the entry's columns
        if col not in known_columns:
            hint = " (chosen/rejected need ranking: true)" if col in _PREFERENCE_COLUMNS else ""
            problems.append(f"{name}.columns.{col}: not a {formatting} column{hint} "
                            f"(known: {', '.join(known_columns)})")
            continue
        if known_columns[col] != theirs:
            mapped[known_columns[col]] = theirs
    problems += [f"{name}.columns.{c}: not supported: {_UNSUPPORTED[c]}" for c in columns if c in _UNSUPPORTED]
    tags = entry.get("tags") or {}
    if tags and formatting != "sharegpt":
        problems.append(f"{name}.tags: tags apply to formatting sharegpt only")
    problems += [f"{name}.tags.{t}: unknown tag (known: {', '.join(sorted(_TAGS))})" for t in tags if t not in _TAGS]
    if formatting == "sharegpt":
        if tags.get("role_tag", "from") != "from":
            mapped["role"] = tags["role_tag"]
        if tags.get("content_tag", "value") != "value":
            mapped["content"] = tags["content_tag"]
        roles = {tags[t]: role for t, role in _TAG_ROLES.items() if t in tags}
        if roles:
            spec["roles"] = roles
    spec["format"] = "pairwise" if ranking else ("alpaca" if formatting == "alpaca" else "sharegpt")
    if mapped:
        spec["columns"] = mapped
    return spec


def _local(folder: Path, file_name: str) -> str:
    """A file next to the registry as an absolute path; anything else as given (the reader reports it)."""
    candidate = folder / file_name
    return str(candidate.resolve()) if candidate.exists() else file_name

"""An axolotl config's `datasets:` block (and its few data settings) as a dataforge build config.

Each dataset entry becomes one input: `type: alpaca` is the Alpaca format, `type: chat_template` a
conversation whose list is `field_messages`, with the turn keys of `message_property_mappings` (or
the older `message_field_role`/`message_field_content`) and the role names of `roles`
(`{assistant: [gpt, model]}` is dataforge's `roles: {gpt: assistant, model: assistant}`).
`type: completion` is plain text. Top-level `sequence_len`, `train_on_inputs` and `val_set_size`
set `tokenize.max_length`, `tokenize.train_on_inputs` and `split.val`.

An entry key this translation does not know, or cannot honour, is a ConfigError naming the entry and
the key. Top-level keys that are not about data (the model, LoRA, the optimizer) are listed as left
to `dataforge train`, never dropped without a word. Prompt formats are not carried over: dataforge
renders every source with one template (`template.name`), whatever axolotl did per dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataforge.config.base import read_yaml_mapping
from dataforge.errors import ConfigError

_ROLES = ("user", "assistant", "system", "tool")
_COMMON = {"path", "type", "ds_type", "data_files", "split", "name", "shards", "trust_remote_code", "revision"}
_BY_TYPE = {
    "alpaca": set(),
    "chat_template": {"field_messages", "message_property_mappings", "message_field_role", "message_field_content",
                      "roles", "roles_to_train", "train_on_eos", "chat_template", "field_system", "field_tools",
                      "split_thinking"},
    "completion": {"field"},
}
_UNSUPPORTED = {
    "shards": "sharding a dataset is not a build step; use `limit` for a quick trial",
    "revision": "hub revisions are not pinned by the reader; download the files",
    "trust_remote_code": "dataset scripts are not run",
    "chat_template": "a per-dataset chat template: dataforge renders every source with one template "
                     "(template.name; 'chat' uses the tokenizer's own)",
    "data_files": "give the file itself as `path`",
    "split_thinking": "reasoning is handled by template.think (keep | strip | final_only)",
}
# Top-level keys that are translated, and those that belong to the data but cannot be honoured.
_TOP = {"datasets", "sequence_len", "train_on_inputs", "val_set_size"}
_TOP_UNSUPPORTED = {"test_datasets", "pretraining_dataset", "rl", "shuffle_merged_datasets", "dataset_exact_deduplication"}


def translate(path: Path) -> tuple[list[dict], dict[str, Any], list[str]]:
    """(inputs, dotted build settings, notes) for the axolotl config at `path`; relative dataset paths
    resolve against the config's folder."""
    config = read_yaml_mapping(path)
    datasets = config.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"{path}: datasets: expected a non-empty list of dataset entries")
    problems: list[str] = []
    problems += [f"{k}: not supported: translate it by hand" for k in sorted(_TOP_UNSUPPORTED & set(config))]
    inputs = [_entry(i, entry, path.resolve().parent, problems) for i, entry in enumerate(datasets)]
    settings: dict[str, Any] = {}
    if "sequence_len" in config:
        settings["tokenize.max_length"] = config["sequence_len"]
    if "train_on_inputs" in config:
        settings["tokenize.train_on_inputs"] = config["train_on_inputs"]
    if "val_set_size" in config:
        val = config["val_set_size"]
        if not isinstance(val, (int, float)) or val < 0:
            problems.append(f"val_set_size: expected a fraction or a count, got {val!r}")
        else:
            settings["split.val"] = val
    trained = {e.pop("_train_turns") for e in inputs if "_train_turns" in e}
    if len(trained) > 1:
        problems.append("datasets: roles_to_train/train_on_eos differ between datasets; dataforge trains "
                        "every source's turns one way (tokenize.train_turns)")
    elif trained:
        settings["tokenize.train_turns"] = trained.pop()
    if problems:
        raise ConfigError(f"{path}: cannot translate:\n  " + "\n  ".join(problems))
    left = sorted(set(config) - _TOP)
    notes = [f"not part of a build, left to `dataforge train`: {', '.join(left)}"] if left else []
    return inputs, settings, notes


def _entry(i: int, entry: Any, folder: Path, problems: list[str]) -> dict:
    at = f"datasets[{i}]"
    if not isinstance(entry, dict) or "path" not in entry:
        problems.append(f"{at}: expected a mapping with a `path`")
        return {}
    kind = entry.get("type", "alpaca")
    if isinstance(kind, dict):
        problems.append(f"{at}.type: a custom prompt format ({', '.join(kind)}) is not translated; use "
                        "`columns:` to map your fields and a template file for the format")
        return {}
    if kind not in _BY_TYPE:
        problems.append(f"{at}.type: {kind!r} is not translated (supported: {', '.join(_BY_TYPE)}; the "
                        "deprecated sharegpt types are chat_template with roles)")
        return {}
    allowed = _COMMON | _BY_TYPE[kind]
    problems += [f"{at}.{k}: unknown key for type {kind} (known: {', '.join(sorted(allowed))})"
                 for k in entry if k not in allowed]
    problems += [f"{at}.{k}: not supported: {why}" for k, why in _UNSUPPORTED.items() if k in entry]
    if entry.get("ds_type") not in (None, "json", "jsonl", "parquet", "csv", "text"):
        problems.append(f"{at}.ds_type: {entry['ds_type']!r} is not read (json, parquet, csv, text)")
    candidate = folder / str(entry["path"])
    spec: dict[str, Any] = {"path": str(candidate.resolve()) if candidate.exists() else str(entry["path"]),
                            "source": _source(entry, i)}
    if entry.get("name"):
        spec["subset"] = entry["name"]
    if entry.get("split"):
        spec["split"] = entry["split"]
    if kind == "alpaca":
        spec["format"] = "alpaca"
    elif kind == "completion":
        spec["format"] = "text"
        if entry.get("field", "text") != "text":
            spec["columns"] = {"text": entry["field"]}
    else:
        _conversation(at, entry, spec, problems)
    return spec


def _source(entry: dict, i: int) -> str:
    """The file's stem (`data/domain.jsonl` -> domain), or the hub id's last part; axolotl has no names."""
    stem = Path(str(entry["path"])).name.split(".")[0]
    return stem or f"dataset{i}"


def _conversation(at: str, entry: dict, spec: dict, problems: list[str]) -> None:
    field = entry.get("field_messages", "messages")
    mapping = dict(entry.get("message_property_mappings") or {})
    for old, key in (("message_field_role", "role"), ("message_field_content", "content")):
        if old in entry:
            mapping.setdefault(key, entry[old])
    problems += [f"{at}.message_property_mappings.{k}: only role and content are read"
                 for k in mapping if k not in ("role", "content")]
    role_key, content_key = mapping.get("role", "role"), mapping.get("content", "content")
    # sharegpt-shaped lists (from/value) read as sharegpt, anything else as OpenAI messages, so the
    # default role names of each format apply too.
    sharegpt = (role_key, content_key) == ("from", "value")
    spec["format"] = "sharegpt" if sharegpt else "messages"
    columns = {"conversations" if sharegpt else "messages": field} if field != ("conversations" if sharegpt else "messages") else {}
    if not sharegpt:
        columns.update({k: v for k, v in (("role", role_key), ("content", content_key)) if v != k})
    for ours, theirs in (("system", "field_system"), ("tools", "field_tools")):
        if theirs in entry and entry[theirs] != ours:
            columns[ours] = entry[theirs]
    if columns:
        spec["columns"] = columns
    roles = entry.get("roles") or {}
    if not isinstance(roles, dict):
        problems.append(f"{at}.roles: expected a mapping like {{assistant: [gpt, model]}}")
        roles = {}
    mapped: dict[str, str] = {}
    for role, names in roles.items():
        if role not in _ROLES:
            problems.append(f"{at}.roles.{role}: unknown role (known: {', '.join(_ROLES)})")
            continue
        for name in [names] if isinstance(names, str) else names or []:
            mapped[str(name)] = role
    if mapped:
        spec["roles"] = mapped
    train = [str(r) for r in entry.get("roles_to_train", ["assistant"])]
    eos = entry.get("train_on_eos", "turn")
    if train != ["assistant"]:
        problems.append(f"{at}.roles_to_train: {train} is not supported; dataforge trains assistant turns only "
                        "(tokenize.train_turns: all | last)")
    if eos not in ("turn", "all"):
        problems.append(f"{at}.train_on_eos: {eos!r} is not supported; dataforge trains the end of every "
                        "trained turn (what axolotl calls `turn`)")
    if "roles_to_train" in entry or "train_on_eos" in entry:
        spec["_train_turns"] = "all"

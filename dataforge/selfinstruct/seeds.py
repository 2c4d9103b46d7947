"""Seed tasks, read from the Self-Instruct seed format or from Alpaca records.

Self-Instruct (`seed_tasks.jsonl`): `{"id", "name", "instruction", "instances": [{"input", "output"}],
"is_classification"}`, one per line. Alpaca: `{"instruction", "input", "output"}` as a JSON array or
JSON lines. Every problem names the file, the line and the field, and nothing is skipped silently:
a seed file with one bad record is refused whole, since seeds are few and hand-written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dataforge.errors import InputError

SELF_INSTRUCT_FIELDS = ("instruction", "instances", "is_classification")
ALPACA_FIELDS = ("instruction", "output")


@dataclass(frozen=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[tuple[str, str], ...]  # (input, output); at least one
    is_classification: bool


def _records(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed value) for a JSON array (line = 1-based index) or JSON lines."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg}", str(path), exc.lineno) from None
        return list(enumerate(data, start=1))
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", str(path), lineno) from None
    return rows


def _text(rec: dict, key: str, path: Path, lineno: int, *, required: bool = True) -> str:
    if key not in rec:
        if required:
            raise InputError("required, but missing", str(path), lineno, key)
        return ""
    value = rec[key]
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {type(value).__name__}", str(path), lineno, key)
    return value


def _seed(rec: object, path: Path, lineno: int) -> SeedTask:
    if not isinstance(rec, dict):
        raise InputError(f"a seed task must be a JSON object, got {type(rec).__name__}", str(path), lineno)
    instruction = _text(rec, "instruction", path, lineno).strip()
    if not instruction:
        raise InputError("must not be empty", str(path), lineno, "instruction")
    task_id = str(rec.get("id", f"seed_task_{lineno}"))
    if "instances" in rec or "is_classification" in rec:
        for key in SELF_INSTRUCT_FIELDS:
            if key not in rec:
                raise InputError("required in the Self-Instruct seed format, but missing", str(path), lineno, key)
        if not isinstance(rec["is_classification"], bool):
            raise InputError(f"must be true or false, got {rec['is_classification']!r}", str(path), lineno,
                             "is_classification")
        instances = rec["instances"]
        if not isinstance(instances, list) or not instances:
            raise InputError("must be a non-empty list of {input, output}", str(path), lineno, "instances")
        pairs = []
        for k, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise InputError("must be an object with input and output", str(path), lineno, f"instances[{k}]")
            pairs.append((_text(inst, "input", path, lineno, required=False),
                          _text(inst, "output", path, lineno)))
        return SeedTask(task_id, instruction, tuple(pairs), rec["is_classification"])
    if "output" not in rec:
        raise InputError("neither the Self-Instruct seed format (instruction, instances, is_classification) "
                         "nor Alpaca (instruction, input, output)", str(path), lineno, "output")
    pair = (_text(rec, "input", path, lineno, required=False), _text(rec, "output", path, lineno))
    return SeedTask(task_id, instruction, (pair,), False)


def load_seed_tasks(path: str | Path) -> list[SeedTask]:
    """All seed tasks of `path`, in file order; raises InputError on the first bad record."""
    p = Path(path)
    if not p.is_file():
        raise InputError("seed file not found", str(p))
    seeds = [_seed(rec, p, lineno) for lineno, rec in _records(p)]
    if not seeds:
        raise InputError("the seed file holds no seed tasks", str(p))
    return seeds

"""Field paths into nested records: `output`, `answer.text`, `instances[0].output`.

References and instructions are often nested (a list of instances, a message list, an answer object),
so every place that names a record field by the user's words accepts a path. A key that exists as
written ("a.b" as one flat column) wins over reading it as a path.
"""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")
MISSING = object()       # a default to pass when a missing field must be told apart from None
_RAISE = object()


def parse_path(path: str) -> list[str | int]:
    """`instances[0].output` -> ["instances", 0, "output"]; a malformed path is a ValueError."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None or (pos == 0 and path.startswith(".")):
            raise ValueError(f"not a field path: {path!r} (write e.g. answer.text or instances[0].output)")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps:
        raise ValueError("an empty field path")
    return steps


def get_field(record: dict, path: str, default: Any = _RAISE) -> Any:
    """The value at `path`, or `default` when a step is missing (KeyError naming the step when no default)."""
    if path in record:
        return record[path]
    value: Any = record
    for step in parse_path(path):
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            if default is not _RAISE:
                return default
            raise KeyError(f"{path}: no {'item' if isinstance(step, int) else 'key'} {step!r}")
    return value


def root_field(path: str) -> str:
    """The top-level column a path starts from (`instances` for `instances[0].output`)."""
    first = parse_path(path)[0]
    return str(first)

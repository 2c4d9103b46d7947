"""Reading JSON Lines files, and JSON arrays, of objects, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from dataforge.errors import InputError


def iter_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line.

    Blank lines are skipped rather than rejected: editors and `cat a b >` leave them, and they hold
    no record. Anything else that is not a JSON object stops the read with an InputError, because the
    callers (eval task files, predictions, results) must not score a file with a line missing.
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=lineno) from None
            if not isinstance(row, dict):
                raise InputError(f"each line must be a JSON object, got {type(row).__name__}",
                                 file=str(path), line=lineno)
            yield lineno, row


def read_object_list(path: str | Path, what: str) -> list[dict]:
    """A .json file holding one array of objects; `what` names the file's role in the error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"a .json {what} file must hold a list of objects", file=str(path))
    return data

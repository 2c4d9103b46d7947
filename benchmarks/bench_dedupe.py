"""Near-dedupe accuracy and speed: dataforge's numpy MinHash-LSH against datasketch, same data, one process.

    .venv/bin/python benchmarks/bench_dedupe.py --n 100000
    .venv/bin/python benchmarks/bench_dedupe.py --n 1000000 --datasketch-n 0   # ours only

Data: benchmarks/synthetic.py (5 % exact copies, 5 % near copies whose every field has a true 3-shingle
Jaccard >= 0.85; --whole-record-planting plants by the whole record's Jaccard instead, which also plants
edits of short outputs that the per-field rule keeps on purpose).
Both sides get the same records and the same settings (word 3-shingles, 128 permutations, threshold
0.8, keep the first record of a cluster) and must do the same work: shingle, sketch, band, verify
each candidate by estimated Jaccard, and union candidates into clusters. The datasketch side uses
its fastest API (MinHash.generator, which sketches a whole shingle list per call, an LSH insertion
session, one query per record) with xxh32 instead of its default SHA-1. The common peer pattern,
one `MinHash.update` per shingle with SHA-1, is slower still (~2,300 records/s of CPU measured
here, against ~13,000 for this baseline).

Scores, against the planted ground truth (a "group" is an original with all its copies):
* recall: share of planted (original, copy) pairs that end in the same cluster; by kind and, for
  near copies, by true Jaccard;
* precision: share of removed records whose kept record is in their planted group.
Peak memory is the highest resident set size sampled every 5 ms during the step, minus the size
before it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import PeakRSS  # noqa: E402
from synthetic import make_alpaca  # noqa: E402

from dataforge.config.build import NearDedupeConfig  # noqa: E402
from dataforge.data.dedupe import field_texts, near_duplicates  # noqa: E402


def groups_of(ids: list[str], planted: pl.DataFrame) -> dict[str, str]:
    """id -> its planted group (the original's id; records never copied are their own group)."""
    group = {i: i for i in ids}
    for orig, copy in planted.select("original_id", "copy_id").iter_rows():
        group[copy] = orig
    return group


def score(ids: list[str], removed_to_kept: dict[str, str], planted: pl.DataFrame) -> dict:
    rep = {i: removed_to_kept.get(i, i) for i in ids}
    truth = groups_of(ids, planted)
    found = [rep[o] == rep[c] for o, c in planted.select("original_id", "copy_id").iter_rows()]
    p = planted.with_columns(pl.Series("found", found))
    near = p.filter(pl.col("kind") == "near")
    buckets = {}
    for lo, hi in ((0.85, 0.9), (0.9, 0.95), (0.95, 1.01)):
        b = near.filter((pl.col("jaccard") >= lo) & (pl.col("jaccard") < hi))
        buckets[f"J {lo:.2f}-{min(hi, 1.0):.2f}"] = (b["found"].mean() if b.height else float("nan"), b.height)
    correct = sum(truth[r] == truth[k] for r, k in removed_to_kept.items())
    return {
        "recall": p["found"].mean(),
        "recall_exact": p.filter(pl.col("kind") == "exact")["found"].mean(),
        "recall_near": near["found"].mean(),
        "by_jaccard": buckets,
        "precision": correct / len(removed_to_kept) if removed_to_kept else 1.0,
        "removed": len(removed_to_kept),
    }


class Timer:
    """Wall time, and CPU time of the whole process (all threads): on a shared machine the CPU time
    is the steadier of the two."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def run_dataforge(records: pl.DataFrame, cfg: NearDedupeConfig, seed: int) -> tuple[dict[str, str], Timer, float, dict]:
    with PeakRSS(0.005) as mem, Timer() as timer:
        res = near_duplicates(records, cfg, seed)
    return {r["removed_id"]: r["kept_id"] for r in res.extra["clusters"]}, timer, mem.delta_mb, res.stats


_WORD = re.compile(r"[^\W_]+")


def datasketch_clusters(texts: Iterable[str], shingle_size: int, num_perm: int, threshold: float,
                        seed: int) -> dict[int, int]:
    """The peers' near dedupe with datasketch's fastest API: removed index -> index of the record kept
    (the first of its cluster). Shared with bench_build so both benchmarks time the same baseline."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    def shingles(text: str) -> list[bytes]:
        toks = _WORD.findall(text.lower())
        if len(toks) < shingle_size:
            return [" ".join(toks).encode()] if toks else []
        return [" ".join(toks[i:i + shingle_size]).encode() for i in range(len(toks) - shingle_size + 1)]

    sketches = list(MinHash.generator((shingles(t) for t in texts), num_perm=num_perm, seed=seed,
                                      hashfunc=xxhash.xxh32_intdigest))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for key, m in enumerate(sketches):
            session.insert(key, m)
    parent = list(range(len(sketches)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, m in enumerate(sketches):
        for b in lsh.query(m):
            if b > a and m.jaccard(sketches[b]) >= threshold:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    roots = [find(x) for x in range(len(sketches))]
    return {x: root for x, root in enumerate(roots) if root != x}


def run_datasketch(records: pl.DataFrame, cfg: NearDedupeConfig, seed: int) -> tuple[dict[str, str], Timer, float]:
    ids = records["id"].to_list()
    texts = field_texts(records, cfg.fields).select(pl.concat_str(cfg.fields, separator="\n")).to_series().to_list()
    with PeakRSS(0.005) as mem, Timer() as timer:
        clusters = datasketch_clusters(texts, cfg.shingle_size, cfg.num_perm, cfg.threshold, seed)
        removed = {ids[r]: ids[k] for r, k in clusters.items()}
    return removed, timer, mem.delta_mb


def _print(name: str, n: int, t: Timer, mem_mb: float, s: dict) -> None:
    print(f"{name:<12} {n:>9,} records  wall {t.wall:7.2f} s ({n / t.wall:>9,.0f} rec/s)  cpu {t.cpu:7.2f} s "
          f"({n / t.cpu:>9,.0f} rec/s)  peak +{mem_mb:,.0f} MB  "
          f"recall {s['recall']:.4f} (exact {s['recall_exact']:.4f}, near {s['recall_near']:.4f})  "
          f"precision {s['precision']:.4f}  removed {s['removed']:,}")
    print("             near recall by true Jaccard: " + ", ".join(
        f"{k}: {v:.4f} (n={c})" for k, (v, c) in s["by_jaccard"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="records (default 100,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasketch-n", type=int, default=None,
                    help="records for the datasketch run (default: --n; 0 skips it; it is slow at 1 M)")
    ap.add_argument("--whole-record-planting", action="store_true",
                    help="plant near copies by the whole record's Jaccard (the rule before per-field comparison)")
    args = ap.parse_args()
    cfg = NearDedupeConfig()

    t0 = time.perf_counter()
    records, planted = make_alpaca(args.n, seed=args.seed, per_field=not args.whole_record_planting)
    near_j = planted.filter(pl.col("kind") == "near")["jaccard"]
    print(f"data: {records.height:,} records in {time.perf_counter() - t0:.1f} s; planted "
          f"{planted.filter(pl.col('kind') == 'exact').height:,} exact and {near_j.len():,} near copies; near true "
          f"Jaccard min {near_j.min():.3f} / p10 {near_j.quantile(0.1):.3f} / median {near_j.median():.3f} / "
          f"share == 1.0 {float((near_j >= 1.0).mean()):.3f}")
    print(f"settings: shingle {cfg.shingle_size} words, {cfg.num_perm} permutations, threshold {cfg.threshold}, "
          f"keep {cfg.keep.value}")

    removed, elapsed, mem, stats = run_dataforge(records, cfg, args.seed)
    ours = score(records["id"].to_list(), removed, planted)
    _print("dataforge", records.height, elapsed, mem, ours)
    print(f"             LSH {stats['bands']} bands x {stats['rows']} rows, {stats['candidate_pairs']:,} candidate "
          f"pairs, {stats['similar_pairs']:,} verified on the whole record, {stats['duplicate_pairs']:,} on every "
          f"field (kept apart by field: {stats['kept_apart_by_field']})")

    n_ds = args.n if args.datasketch_n is None else args.datasketch_n
    if n_ds:
        sub = records.head(n_ds)
        ids = set(sub["id"].to_list())
        sub_planted = planted.filter(pl.col("original_id").is_in(ids) & pl.col("copy_id").is_in(ids))
        removed_ds, elapsed_ds, mem_ds = run_datasketch(sub, cfg, args.seed)
        theirs = score(sub["id"].to_list(), removed_ds, sub_planted)
        _print("datasketch", sub.height, elapsed_ds, mem_ds, theirs)
        per = {k: (getattr(elapsed, k) / records.height, getattr(elapsed_ds, k) / sub.height) for k in ("wall", "cpu")}
        print("speed-up (time per record): " + ", ".join(f"{k} {theirs_t / ours_t:.1f}x" for k, (ours_t, theirs_t) in per.items()))


if __name__ == "__main__":
    main()

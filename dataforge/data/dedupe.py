"""Duplicate removal: exact (content hash), near (MinHash-LSH) and against reference sets.

Near duplicates: the rule. Two records are near duplicates only when EACH compared field
(`dedupe.near.fields`, default history, instruction, input, output) is a near duplicate: the
Jaccard similarity of its lowercased word 3-grams is >= the threshold (0.8). A field with fewer than
3 words has one shingle, all its words, so it must have the same words; a field empty in both records
counts as equal. Clusters are the connected components of that relation.

Why every field, and not the whole record: the whole record hides where the difference is. A
reading-comprehension set asks several questions about one long passage: "What concept is mentioned
first?" (answer: "atheism") and "...last?" ("subjective idealism") share the passage and so reach
an estimated similarity of 0.94 as whole records, and the old whole-record rule removed most of the
questions of each passage. A word edit in a long passage and a different question over the same
passage change about as many shingles; only the field tells them apart. Comparing the prompt side
and the response side would still remove two questions over one passage that have the same short
answer ("Yes."), so each field is compared on its own. What this costs: a short field must match in
all but a few words, so an edited short instruction is never a duplicate; one changed word may be a
different question, and a copy kept by mistake is a milder harm than a distinct record lost. The
system prompt is not compared by default: it is boilerplate shared by whole datasets, and in the LSH
text a long shared one would make every pair a candidate. History is compared: two conversations
that end with the same "Thanks!" / "You're welcome" turn are not duplicates.

How it is computed at 1 M records: MinHash-LSH on the compared fields joined (as before), each
candidate verified by its estimated Jaccard (>= threshold); a pair that passes (there are about as
many as duplicates) is then checked field by field with the exact Jaccard of the shingle sets
(`shingle_jaccard`; fields equal as text are skipped). If every field is >= t, the joined text is
too (the mediant of the fields' ratios), so the whole-record check only discards pairs the field
check would discard, up to the estimate's noise.

Measured catch rates (benchmarks/bench_dedupe_edits.py, 2,000 pairs per row, default config; the
rule before this one in brackets): with 1, 2, 3, 4, 5 of the 40 words of an answer changed (a
10-word instruction kept), 0.998, 0.091, 0, 0, 0 [0.998, 0.346, 0.028, 0.002, 0]: one changed word of
40 leaves Jaccard (38-3)/(38+3) = 0.85, two leave about 0.73, below the threshold. With the changes
anywhere in a 10-word instruction + 30-word answer: 0.717, 0.009, 0.001, 0, 0 [0.957, 0.141, 0.007,
0, 0]; a changed instruction word is never caught now. Case, punctuation and spacing changes are
always caught (they leave the words as they are).

Why these defaults:

* 3-word shingles: instruction records are short (20-100 words). One changed word alters up to k
  shingles, so for a 40-word field one edit leaves Jaccard (38-3)/(38+3) = 0.85 with k = 3 but
  (36-5)/(36+5) = 0.76 with the k = 5 used for web pages, which would miss the edit. Single words or
  2-grams make different records on the same topic look alike.
* 128 permutations: the estimate's standard deviation is sqrt(J(1-J)/128), 0.035 at J = 0.8. A pair
  passes the estimate when >= 103 of 128 values agree; the chance of that (binomial) is 0.09 at
  true J = 0.75, 0.50 at 0.8, 0.94 at 0.85, 0.9996 at 0.9 and 0.005 at 0.7. 256 permutations would
  halve the variance at twice the hashing cost.
* threshold 0.8: one changed word in a 40+ word field stays above it, two do not (see above), and
  two answers to the same templated instruction ("Write a haiku about ...") usually fall well below.
* LSH (see minhash.lsh_shape): 18 bands x 7 rows, so a pair at J = 0.8 becomes a candidate with
  probability 0.986 (0.999 at 0.85); the verification above then decides, so end-to-end recall is
  ~0.94 at J = 0.85 and >= 0.999 from J = 0.9.

Measured with benchmarks/bench_dedupe.py on 200,000 synthetic records (5 % exact copies, 5 % near
copies whose every field has true Jaccard 0.85-1.0): recall 0.996 (exact copies 1.0, near copies
0.993), precision 1.0, no slower than the whole-record rule (the field checks take ~0.3 s of ~5 s).
Planted by the whole record's Jaccard instead, 751 of the 10,000 near copies are edits of answers
too short to stay >= 0.8 on their own, which the field rule keeps on purpose: recall 0.960.

`dedupe.near.skip_sources` leaves whole sources out (records similar by design), and the build
summary warns when near-dedupe removes more than `dedupe.near.warn_share` of a source.

Clusters are transitive: if A~B and B~C, all three form one cluster even when A and C are below the
threshold, so a removed record's similarity to the record that is kept can be lower than the
threshold; the clusters file reports the estimated similarity of the compared fields joined, as is.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataforge.config.build import KeepRule, NearDedupeConfig
from dataforge.data.minhash import (
    MinHasher,
    band_keys,
    candidate_pairs,
    connected_components,
    cross_candidate_pairs,
    lsh_shape,
    meets_threshold,
    signature_similarity,
    sorted_unique,
)
from dataforge.data.ngrams import token_hashes, tokenize, window_hashes
from dataforge.data.record import CLUSTER_ID, CONTENT_HASH
from dataforge.data.stage import StageResult, make_rejects
from dataforge.errors import InternalError

_SNIPPET = 80


def _origin() -> pl.Expr:
    return pl.format("{}:{}", pl.col("origin_file"), pl.col("origin_line"))


def exact_duplicates(records: pl.DataFrame) -> StageResult:
    """Keep the first record of each content hash; every later copy is rejected, naming the kept one."""
    if CONTENT_HASH not in records.columns:
        raise InternalError(f"records have no '{CONTENT_HASH}' column; the clean stage adds it")
    missing = records.filter(pl.col(CONTENT_HASH).is_null())
    if missing.height:
        row = missing.row(0, named=True)
        raise InternalError(f"record {row['id']} ({row['origin_file']}:{row['origin_line']}) has no content hash; "
                            "the clean stage gives every record one")
    first = records.get_column(CONTENT_HASH).is_first_distinct()
    kept = records.filter(first)
    owners = exact_owners(kept)
    removed = records.filter(~first).join(owners, on=CONTENT_HASH, how="left", maintain_order="left")
    rejected, clusters = exact_rejects(removed)
    return StageResult(kept=kept, rejected=rejected, extra={"clusters": clusters},
                       stats={"removed": removed.height})


def exact_owners(records: pl.DataFrame) -> pl.DataFrame:
    """content_hash, kept_id, kept_origin of records that own their content (the first copy)."""
    return records.select(CONTENT_HASH, pl.col("id").alias("kept_id"), _origin().alias("kept_origin"))


def exact_rejects(removed: pl.DataFrame) -> tuple[pl.DataFrame, list[dict]]:
    """Reject rows and clusters-file rows of removed exact copies (columns kept_id, kept_origin beside
    the record's own)."""
    rejected = make_rejects(removed, "dedupe_exact", "exact_duplicate",
                            pl.format("exact duplicate of {} ({})", pl.col("kept_id"), pl.col("kept_origin")))
    clusters = removed.select(
        pl.col("id").alias("removed_id"), "kept_id", pl.lit(1.0).alias("similarity"), pl.lit("exact").alias("kind"),
        _origin().alias("removed_origin"), "kept_origin",
    ).to_dicts()
    return rejected, clusters


def keepers(labels: np.ndarray, lengths: np.ndarray | None, keep: KeepRule) -> np.ndarray:
    """Row index of the record each row's cluster keeps. Labels are the clusters' smallest rows, so
    `first` is the label itself; `longest` takes the longest output (`lengths`, in characters), ties
    to the earliest row."""
    if keep == KeepRule.first:
        return labels
    n = len(labels)
    order = np.lexsort((np.arange(n), -lengths.astype(np.int64), labels))
    head = np.r_[True, labels[order][1:] != labels[order][:-1]]
    keeper_of_label = np.empty(n, dtype=np.int64)
    keeper_of_label[labels[order][head]] = order[head]
    return keeper_of_label[labels]


def output_lengths(records: pl.DataFrame) -> np.ndarray:
    """Characters of each record's output: what `keep: longest` compares."""
    return records.get_column("output").fill_null("").str.len_chars().to_numpy().astype(np.int64)


def field_texts(records: pl.DataFrame, fields: list[str]) -> pl.DataFrame:
    """One text column per compared field; `history` becomes its messages' contents, one per line."""
    exprs = [(pl.col("history").list.eval(pl.element().struct.field("content")).list.join("\n")
              if f == "history" else pl.col(f)).fill_null("").alias(f) for f in fields]
    return records.select(exprs)


def shingle_jaccard(texts: pl.Series, i: np.ndarray, j: np.ndarray, shingle_size: int) -> np.ndarray:
    """Exact Jaccard similarity of the word-shingle sets of texts[i] and texts[j], pair by pair.

    A text with fewer than `shingle_size` words has one shingle (all its words), so it matches only
    the same words; two texts without words have similarity 1. Shingles are keyed as
    (row << (64 - b)) | (hash >> b) with b bits for the row: a collision needs two shingles of one
    text to agree on 64 - b >= 40 hash bits.
    """
    out = np.ones(len(i), dtype=np.float64)
    differ = np.flatnonzero((texts.gather(i) != texts.gather(j)).to_numpy())  # equal texts: similarity 1
    if len(differ):
        out[differ] = _differing_jaccard(texts, i[differ], j[differ], shingle_size)
    return out


def _differing_jaccard(texts: pl.Series, i: np.ndarray, j: np.ndarray, shingle_size: int) -> np.ndarray:
    rows, inverse = np.unique(np.r_[i, j], return_inverse=True)
    a, b = inverse[:len(i)], inverse[len(i):]
    hashes, counts = token_hashes(tokenize(texts.gather(rows)))
    h, owner, _ = window_hashes(hashes, counts, shingle_size)
    shift = np.uint64(64 - len(rows).bit_length())
    low = (np.uint64(1) << shift) - np.uint64(1)
    keys = sorted_unique((owner.astype(np.uint64) << shift) | (h >> np.uint64(len(rows).bit_length())))
    size = np.bincount((keys >> shift).astype(np.int64), minlength=len(rows))
    start = np.r_[0, np.cumsum(size)[:-1]]
    na = size[a]
    pair = np.repeat(np.arange(len(a)), na)
    offset = np.arange(int(na.sum())) - np.repeat(np.cumsum(na) - na, na)
    query = (b[pair].astype(np.uint64) << shift) | (keys[start[a][pair] + offset] & low)
    found = np.searchsorted(keys, query)
    hit = keys[np.minimum(found, max(len(keys) - 1, 0))] == query if len(keys) else np.zeros(0, dtype=bool)
    inter = np.bincount(pair[hit], minlength=len(a))
    union = size[a] + size[b] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def verified_pairs(sig: np.ndarray, texts: pl.DataFrame, i: np.ndarray, j: np.ndarray,
                   cfg: NearDedupeConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """The candidate pairs (rows of `sig` and `texts`) that are near duplicates by the rule of the
    module doc: estimated similarity first, then every field's exact shingle Jaccard. Stats: the
    counts of each step."""
    n_candidates = len(i)
    similar = meets_threshold(signature_similarity(sig, i, sig, j), cfg.threshold, cfg.num_perm)
    i, j = i[similar], j[similar]
    n_similar, kept_apart = len(i), {}
    for f in cfg.fields:  # every field must be a near duplicate too: see the module doc
        same = shingle_jaccard(texts.get_column(f), i, j, cfg.shingle_size) >= cfg.threshold - 1e-12
        kept_apart[f] = int((~same).sum())
        i, j = i[same], j[same]
    return i, j, {"candidate_pairs": n_candidates, "similar_pairs": n_similar, "kept_apart_by_field": kept_apart,
                  "duplicate_pairs": len(i)}


def near_rejects(removed: pl.DataFrame) -> tuple[pl.DataFrame, list[dict]]:
    """Reject rows and clusters-file rows of removed near duplicates (columns kept_id, kept_origin,
    similarity beside the record's own)."""
    rejected = make_rejects(removed, "dedupe_near", "near_duplicate", pl.format(
        "near duplicate of {} ({}), estimated similarity {}",
        pl.col("kept_id"), pl.col("kept_origin"), pl.col("similarity").round(3)))
    clusters = removed.select(
        pl.col("id").alias("removed_id"), "kept_id", "similarity", pl.lit("near").alias("kind"),
        _origin().alias("removed_origin"), "kept_origin",
    ).to_dicts()
    return rejected, clusters


def near_stats(seen: dict[str, int], lost: dict[str, int], cfg: NearDedupeConfig, bands: int, rows: int,
               pair_stats: dict, clusters: int, removed: int) -> dict:
    """The near-dedupe step's manifest stats from its counts (records seen and removed per source)."""
    by_source = {s: {"in": seen[s], "removed": lost.get(s, 0), "skipped": s in cfg.skip_sources} for s in sorted(seen)}
    return {"bands": bands, "rows": rows, **pair_stats, "clusters": clusters, "removed": removed,
            "by_source": by_source}


def near_duplicates(records: pl.DataFrame, cfg: NearDedupeConfig, seed: int) -> StageResult:
    """Remove near duplicates, keeping one record per cluster by `cfg.keep`; kept records carry
    `cluster_id` (their own id: each kept record stands for its cluster). Records of
    `cfg.skip_sources` take no part. Stats give, per source, the records seen and removed."""
    n = records.height
    sources = records.get_column("source")
    texts = field_texts(records, cfg.fields)
    active = np.arange(n)
    if cfg.skip_sources:
        take = ~sources.is_in(cfg.skip_sources).to_numpy()
        active, texts = active[take], texts.filter(pl.Series(take))
    sig, present = MinHasher(cfg.num_perm, seed).signatures(texts, cfg.fields, cfg.shingle_size)
    bands, rows = lsh_shape(cfg.threshold, cfg.num_perm, cfg.bands)
    i, j = candidate_pairs(band_keys(sig, bands, rows), np.flatnonzero(present))
    i, j, pair_stats = verified_pairs(sig, texts, i, j, cfg)
    labels = connected_components(n, active[i], active[j])
    keeper = keepers(labels, output_lengths(records) if cfg.keep != KeepRule.first else None, cfg.keep)
    gone = np.flatnonzero(keeper != np.arange(n))
    in_sub = np.full(n, -1, dtype=np.int64)
    in_sub[active] = np.arange(len(active))
    sim = signature_similarity(sig, in_sub[gone], sig, in_sub[keeper[gone]])

    ids = records.get_column("id")
    origins = records.select(_origin()).to_series()
    removed = records[gone].with_columns(
        ids.gather(keeper[gone]).alias("kept_id"),
        origins.gather(keeper[gone]).alias("kept_origin"),
        pl.Series("similarity", sim),
    )
    rejected, clusters = near_rejects(removed)
    keep_mask = np.ones(n, dtype=bool)
    keep_mask[gone] = False
    kept = records.filter(pl.Series(keep_mask)).with_columns(pl.col("id").alias(CLUSTER_ID))
    seen = dict(sources.value_counts().iter_rows())
    lost = dict(removed.get_column("source").value_counts().iter_rows()) if len(gone) else {}
    stats = near_stats(seen, lost, cfg, bands, rows, pair_stats, int(len(np.unique(keeper[gone]))), len(gone))
    return StageResult(kept=kept, rejected=rejected, extra={"clusters": clusters}, stats=stats)


def reference_duplicates(records: pl.DataFrame, reference_texts: list[str], cfg: NearDedupeConfig,
                         seed: int) -> StageResult:
    """Drop records that near-duplicate any reference text (an earlier release, an eval set).

    Only record-reference pairs are compared: records similar to each other, or references similar
    to each other, are left alone. A record matching several references names the most similar one.
    """
    if not reference_texts or records.height == 0:
        return StageResult(kept=records, stats={"removed": 0, "references": len(reference_texts)})
    hasher = MinHasher(cfg.num_perm, seed)
    sig, present = hasher.signatures(field_texts(records, cfg.fields), cfg.fields, cfg.shingle_size)
    ref_sig, ref_present = hasher.signatures(pl.DataFrame({"text": reference_texts}, schema={"text": pl.Utf8}),
                                             ["text"], cfg.shingle_size)
    bands, rows = lsh_shape(cfg.threshold, cfg.num_perm, cfg.bands)
    i, j = cross_candidate_pairs(band_keys(sig, bands, rows), np.flatnonzero(present),
                                 band_keys(ref_sig, bands, rows), np.flatnonzero(ref_present))
    sim = signature_similarity(sig, i, ref_sig, j)
    ok = meets_threshold(sim, cfg.threshold, cfg.num_perm)
    i, j, sim = i[ok], j[ok], sim[ok]
    order = np.lexsort((j, -sim, i))
    best = order[np.r_[True, i[order][1:] != i[order][:-1]]] if len(order) else order
    rows_out, refs, sims = i[best], j[best], sim[best]

    snippets = [" ".join(reference_texts[r].split())[:_SNIPPET] for r in refs.tolist()]
    removed = records[rows_out].with_columns(
        pl.Series("ref", refs), pl.Series("similarity", sims), pl.Series("snippet", snippets, dtype=pl.Utf8))
    rejected = make_rejects(removed, "dedupe_reference", "near_duplicate_of_reference", pl.format(
        "near duplicate of reference #{} (estimated similarity {}): '{}'",
        pl.col("ref"), pl.col("similarity").round(3), pl.col("snippet")))
    keep_mask = np.ones(records.height, dtype=bool)
    keep_mask[rows_out] = False
    return StageResult(kept=records.filter(pl.Series(keep_mask)), rejected=rejected,
                       stats={"removed": len(rows_out), "references": len(reference_texts),
                              "candidate_pairs": int(len(ok))})

"""The per-batch work of the Ray engine: plain functions over Arrow tables, no Ray in here.

Each function takes one Arrow batch and returns one, calling the same pure stage functions as the
local engine (`clean`, `decontaminate`, `apply_template`, `tokenize_records`, the MinHash helpers),
so a record comes out of a batch exactly as it comes out of the whole frame. The per-record stages
are row-independent: a record's result never depends on the other records of its batch.

Side rows. A stage returns kept records and side outputs (rejects, cluster and contamination rows,
statistics); Ray's `map_batches` has one output, so both travel in one table: kept records have a
null `_side`, side rows name their kind in `_side` and carry the row as JSON in `_json` (and their
`source`, for the per-source accounting). The engine splits them after each stage.

Order. `_row` is a record's place in the collect order (input index << 40 | position in the input)
and `_rep` its repeat number from up-sampling; publishing sorts by them, which reproduces the local
engine's row order, and global steps use `_row` where the local engine uses the row position.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config.build import BuildConfig
from dataforge.data import record as R
from dataforge.data.stage import BuildContext, Stage, StageResult, make_rejects

SIDE, JSON, ROW, REP = "_side", "_json", "_ray_row", "_ray_rep"
TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")
TOK = "tok_"   # prefix of the token columns while they travel with their record
SPLITS = ("train", "val", "test")


def frame_of(batch: pa.Table) -> pl.DataFrame:
    out = pl.from_arrow(batch)
    return out if isinstance(out, pl.DataFrame) else out.to_frame()


def emit(kept: pl.DataFrame, result: StageResult | None = None, stage: str = "") -> pa.Table:
    """Kept records plus the side rows of `result` in one table (see the module doc)."""
    parts = [kept.with_columns(pl.lit(None, pl.Utf8).alias(SIDE), pl.lit(None, pl.Utf8).alias(JSON))]
    if result is not None:
        if result.rejected.height:
            lines = [json.dumps(r, ensure_ascii=False) for r in result.rejected.to_dicts()]
            parts.append(_side_frame("reject", result.rejected.get_column("source").to_list(), lines))
        for name, rows in result.extra.items():
            if rows:
                parts.append(_side_frame(name, [r.get("source") for r in rows],
                                         [json.dumps(r, ensure_ascii=False, default=str) for r in rows]))
        if result.stats:
            parts.append(_side_frame(f"stats:{stage}", [None], [json.dumps(result.stats, default=str)]))
    return pl.concat(parts, how="diagonal_relaxed").to_arrow()


def _side_frame(kind: str, sources: list, lines: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"source": sources, SIDE: [kind] * len(lines), JSON: lines},
                        schema={"source": pl.Utf8, SIDE: pl.Utf8, JSON: pl.Utf8})


def kept_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch[SIDE])).drop_columns([SIDE, JSON])


def side_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch[SIDE])).select(["source", SIDE, JSON])


class RecordStage:
    """A per-record stage over batches. Ray builds one per actor, so what it loads (the tokenizer,
    the template, the eval and reference texts) is loaded once per actor, not once per batch."""

    def __init__(self, stage: Stage, cfg_json: dict, base_dir: str | None):
        self.stage = stage
        self.ctx = BuildContext(BuildConfig.model_validate(cfg_json), Path(base_dir) if base_dir else None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = frame_of(batch)
        run = getattr(self, f"_{self.stage.name}", None)
        if run is not None:
            return run(frame)
        result = self.stage.run(frame, self.ctx)   # a stage this engine has no special step for
        return emit(result.kept, result, self.stage.name)

    @cached_property
    def reference_texts(self) -> list[str]:
        from dataforge.data.io.readers import read_records
        from dataforge.data.stages import record_text

        return [record_text(r) for spec in self.ctx.resolve(self.ctx.cfg.dedupe.reference)
                for r in read_records(spec.path, split=spec.split, subset=spec.subset)]

    @cached_property
    def eval_sets(self) -> dict[str, list[str]]:
        from dataforge.data.decontaminate import suite_eval_texts
        from dataforge.data.io.readers import read_records
        from dataforge.data.stages import record_text

        dc = self.ctx.cfg.decontaminate
        sets = {spec.path: [record_text(r) for r in read_records(spec.path, split=spec.split, subset=spec.subset)]
                for spec in self.ctx.resolve(dc.sets)}
        if dc.suite:
            sets.update(suite_eval_texts(dc.suite))
        return sets

    def _clean(self, frame: pl.DataFrame) -> pa.Table:
        from dataforge.data.clean import clean

        result = clean(frame, self.ctx.cfg.clean)
        return emit(result.kept, result, "clean")

    def _dedupe_reference(self, frame: pl.DataFrame) -> pa.Table:
        from dataforge.data.dedupe import reference_duplicates

        near = self.ctx.cfg.dedupe.reference_settings
        result = reference_duplicates(frame, self.reference_texts, near, near.seed)
        return emit(result.kept, result, "dedupe_reference")

    def _decontaminate(self, frame: pl.DataFrame) -> pa.Table:
        from dataforge.data.decontaminate import decontaminate

        result = decontaminate(frame, self.eval_sets, self.ctx.cfg.decontaminate.ngram)
        return emit(result.kept, result, "decontaminate")

    def _template(self, frame: pl.DataFrame) -> pa.Table:
        from dataforge.data.turns import render_records

        ctx, template, think = self.ctx, self.ctx.template, self.ctx.cfg.template.think
        kept = render_records(frame, template, ctx.tokenizer if template.needs_tokenizer else None, seed=ctx.cfg.seed,
                              variants=ctx.cfg.template.variants, think=think, train_turns=ctx.cfg.tokenize.train_turns)
        stats = {"name": template.name, "sha256": template.sha256, "think": think.value}
        return emit(kept, StageResult(kept=kept, stats=stats), "template")

    def _tokenize(self, frame: pl.DataFrame) -> pa.Table:
        """Each split's records of the batch, with their token columns; packing happens at publish."""
        from dataforge.data.tokenize import tokenize_records

        cfg = self.ctx.cfg.tokenize
        kept, rejected, stats = [], [], {"counts": {}, "encoded": {}}
        for split in SPLITS:
            part = frame.filter(pl.col(R.SPLIT) == split)
            if part.height == 0:
                continue
            result = tokenize_records(part, self.ctx.tokenizer, cfg, template=self.ctx.template,
                                      think=self.ctx.cfg.template.think)
            table = result.table
            if result.rejected.height:
                part = part.filter(pl.col("id").is_in(table.column("id").to_pylist()))
            tokens = pl.from_arrow(table.select(list(TOKEN_COLUMNS)))
            kept.append(part.hstack(tokens.rename({c: TOK + c for c in TOKEN_COLUMNS})))
            rejected.append(result.rejected)
            stats["counts"][split] = result.counts
            stats["encoded"][split] = result.routes
        if not kept:
            return emit(frame.clear())
        result = StageResult(kept=pl.concat(kept), rejected=pl.concat(rejected), stats=stats)
        return emit(result.kept, result, "tokenize")


def merge_stats(a: object, b: object) -> object:
    """Statistics of two batches as one: numbers add up, dicts merge key by key, anything else
    (names, settings) is the same in every batch and kept."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge_stats(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return a + b
    return a


# ---------------------------------------------------------------- near-duplicates


def near_texts(batch: pa.Table, fields: list[str], skip_sources: list[str]) -> pa.Table:
    """The compared fields of the records near-dedupe takes part in, keyed by `_row`."""
    from dataforge.data.dedupe import field_texts

    frame = frame_of(batch)
    if skip_sources:
        frame = frame.filter(~pl.col("source").is_in(skip_sources))
    texts = field_texts(frame, fields)
    return texts.select(pl.all().name.prefix("f_")).with_columns(
        frame.get_column(ROW), frame.get_column("output").fill_null("").str.len_chars().cast(pl.Int64).alias("_outlen"),
        frame.get_column("id").alias("f_id"),
        frame.select(pl.format("{}:{}", pl.col("origin_file"), pl.col("origin_line"))).to_series().alias("f_origin"),
    ).to_arrow()


def pair_members(batch: pa.Table, pairs: pl.DataFrame) -> pa.Table:
    """The records of this batch that are one side of a pair, once per pair and side: a broadcast
    join of the (small) pair list with the texts, brought together per pair by `pair_up`."""
    frame = frame_of(batch).drop("_outlen")
    parts = [pairs.join(frame, left_on=side, right_on=ROW, how="inner").with_columns(pl.lit(side).alias("_role"))
             for side in ("a", "b")]
    return pl.concat(parts).to_arrow()


def pair_up(group: pa.Table) -> pa.Table:
    """One row per pair (a, b) with the fields of both records as a_<field> and b_<field>."""
    frame = frame_of(group).drop("_bucket")
    fields = [c for c in frame.columns if c.startswith("f_")]
    sides = [frame.filter(pl.col("_role") == side).select("a", "b", *[pl.col(c).alias(f"{side}_{c[2:]}") for c in fields])
             for side in ("a", "b")]
    return sides[0].join(sides[1], on=["a", "b"], how="inner").to_arrow()


def signatures(texts: pl.DataFrame, fields: list[str], prefix: str, num_perm: int, seed: int,
               shingle_size: int) -> tuple[np.ndarray, np.ndarray]:
    from dataforge.data.minhash import MinHasher

    own = texts.select([pl.col(prefix + f).alias(f) for f in fields])
    return MinHasher(num_perm, seed).signatures(own, fields, shingle_size)


def band_rows(batch: pa.Table, fields: list[str], num_perm: int, seed: int, shingle_size: int,
              bands: int, rows: int) -> pa.Table:
    """One row (band, key, row) per band of every record that has shingles."""
    from dataforge.data.minhash import band_keys

    texts = frame_of(batch)
    sig, present = signatures(texts, fields, "f_", num_perm, seed, shingle_size)
    keys = band_keys(sig, bands, rows)[present]
    row_ids = texts.get_column(ROW).to_numpy()[present]
    return pa.table({"band": np.tile(np.arange(bands, dtype=np.int32), len(row_ids)),
                     "key": keys.reshape(-1).astype(np.uint64), "a": np.repeat(row_ids, bands)})


def bucket_pairs(group: pa.Table) -> pa.Table:
    """Candidate pairs of whole band buckets: the same window rule as minhash.candidate_pairs."""
    from dataforge.data.minhash import window_pairs

    frame = frame_of(group).sort("band", "key", "a")
    code = frame.select(pl.struct("band", "key").rank("dense")).to_series().to_numpy()
    a, b = window_pairs(code, frame.get_column("a").to_numpy())
    return pa.table({"a": a, "b": b})


def unique_pairs(group: pa.Table) -> pa.Table:
    return frame_of(group).select("a", "b").unique().to_arrow()


def verify_pairs(batch: pa.Table, fields: list[str], num_perm: int, seed: int, shingle_size: int,
                 threshold: float) -> pa.Table:
    """Each candidate pair's verdict: `similar` (estimated Jaccard over the threshold) and `apart`,
    the first compared field below the threshold (null when every field is a near duplicate)."""
    from dataforge.data.dedupe import shingle_jaccard
    from dataforge.data.minhash import meets_threshold, signature_similarity

    frame = frame_of(batch)
    n = frame.height
    sig_a, _ = signatures(frame, fields, "a_", num_perm, seed, shingle_size)
    sig_b, _ = signatures(frame, fields, "b_", num_perm, seed, shingle_size)
    idx = np.arange(n)
    similar = meets_threshold(signature_similarity(sig_a, idx, sig_b, idx), threshold, num_perm)
    apart = np.full(n, None, dtype=object)
    for f in fields:
        texts = pl.concat([frame.get_column("a_" + f), frame.get_column("b_" + f)])
        below = shingle_jaccard(texts, idx, idx + n, shingle_size) < threshold - 1e-12
        apart[below & (apart == None) & similar] = f  # noqa: E711 (elementwise)
    return pa.table({"a": frame.get_column("a").to_numpy(), "b": frame.get_column("b").to_numpy(),
                     "similar": similar, "apart": pa.array(apart.tolist(), type=pa.string())})


def keepers_longest(group: pa.Table) -> pa.Table:
    """keep: longest. Per component (label), the member with the longest output, ties to the earliest."""
    frame = frame_of(group).sort(["label", "_outlen", "node"], descending=[False, True, False])
    first = frame.group_by("label", maintain_order=True).first().select("label", pl.col("node").alias("keeper"))
    return frame.join(first, on="label").select("node", "keeper").to_arrow()


def removal_similarity(batch: pa.Table, fields: list[str], num_perm: int, seed: int, shingle_size: int) -> pa.Table:
    """Estimated similarity of each removed record to the record its cluster keeps."""
    from dataforge.data.minhash import signature_similarity

    frame = frame_of(batch)
    sig_a, _ = signatures(frame, fields, "a_", num_perm, seed, shingle_size)
    sig_b, _ = signatures(frame, fields, "b_", num_perm, seed, shingle_size)
    idx = np.arange(frame.height)
    return frame.select(pl.col("a").alias("node"), pl.col("b").alias("keeper"), pl.col("b_id").alias("kept_id"),
                        pl.col("b_origin").alias("kept_origin")).with_columns(
        pl.Series("similarity", signature_similarity(sig_a, idx, sig_b, idx))).to_arrow()


def apply_near(batch: pa.Table, removed: pl.DataFrame) -> pa.Table:
    """Drop the removed records of this batch (rejects and cluster rows as near_duplicates writes them);
    every kept record gets `cluster_id` = its own id."""
    frame = frame_of(batch)
    if removed.width == 0:
        removed = pl.DataFrame(schema={"node": pl.Int64, "keeper": pl.Int64, "similarity": pl.Float64,
                                       "kept_id": pl.Utf8, "kept_origin": pl.Utf8})
    hit = frame.join(removed, left_on=ROW, right_on="node", how="inner")
    origin = pl.format("{}:{}", pl.col("origin_file"), pl.col("origin_line"))
    rejected = make_rejects(hit, "dedupe_near", "near_duplicate", pl.format(
        "near duplicate of {} ({}), estimated similarity {}",
        pl.col("kept_id"), pl.col("kept_origin"), pl.col("similarity").round(3)))
    clusters = hit.select(pl.col("id").alias("removed_id"), "kept_id", "similarity", pl.lit("near").alias("kind"),
                          origin.alias("removed_origin"), "kept_origin").to_dicts()
    kept = frame.filter(~pl.col(ROW).is_in(hit.get_column(ROW).implode())).with_columns(pl.col("id").alias(R.CLUSTER_ID))
    stats = {"seen": dict(frame.get_column("source").value_counts().iter_rows()),
             "lost": dict(hit.get_column("source").value_counts().iter_rows())}
    return emit(kept, StageResult(kept=kept, rejected=rejected, extra={"clusters": clusters}, stats=stats), "dedupe_near")


# ---------------------------------------------------------------- exact dedupe, split, mix


def exact_in_bucket(group: pa.Table) -> pa.Table:
    """dedupe.exact_duplicates over one hash bucket: every copy of a content hash is in the same
    bucket, and sorting by `_row` makes "first" the first in collect order, as in the local engine."""
    from dataforge.data.dedupe import exact_duplicates

    frame = frame_of(group).drop("_bucket").sort(ROW)
    result = exact_duplicates(frame)
    return emit(result.kept, result, "dedupe_exact")


def split_draws(batch: pa.Table, seed: int) -> pa.Table:
    """Each split group's draw (split._groups), as a signed int64 that sorts like the uint64 draw."""
    import xxhash

    s = seed & 0xFFFFFFFFFFFFFFFF
    keys = batch.column("key").to_pylist()
    draws = np.fromiter((xxhash.xxh3_64_intdigest(k.encode(), seed=s) for k in keys), dtype=np.uint64, count=len(keys))
    return batch.append_column("draw", pa.array((draws ^ np.uint64(1 << 63)).view(np.int64)))


def assign_split(batch: pa.Table, chosen: pl.DataFrame) -> pa.Table:
    """Add `cluster_id` (when near-dedupe did not) and `split`: the groups chosen for val and test,
    train for every other record (split.split_records' rule, decided from the sorted groups)."""
    from dataforge.errors import InternalError

    frame = frame_of(batch)
    if R.CLUSTER_ID not in frame.columns:
        frame = frame.with_columns(pl.col("id").alias(R.CLUSTER_ID))
    elif frame.filter(pl.col(R.CLUSTER_ID) != pl.col("id")).height:
        raise InternalError("a record's cluster_id is not its own id; the Ray engine's split keys groups by content hash")
    labels = frame.select(pl.col(R.CONTENT_HASH).alias("key")).join(chosen, on="key", how="left", maintain_order="left")
    return emit(frame.with_columns(labels.get_column(R.SPLIT).fill_null("train")))


def mix_order(frame: pl.DataFrame, seed: int) -> np.ndarray:
    """mix._seeded_order's key of every row, as signed int64 that sorts like the uint64 value."""
    import xxhash

    from dataforge.data.record import CONTENT_HASH

    keys = frame.get_column(CONTENT_HASH if CONTENT_HASH in frame.columns else "id").to_list()
    s = seed & 0xFFFFFFFFFFFFFFFF
    order = np.fromiter((xxhash.xxh3_64_intdigest(k.encode(), seed=s) for k in keys), dtype=np.uint64, count=len(keys))
    return (order ^ np.uint64(1 << 63)).view(np.int64)


def mix_keys(batch: pa.Table, seed: int) -> pa.Table:
    frame = frame_of(batch).filter(pl.col(R.SPLIT) == "train")
    return pa.table({"source": frame.get_column("source").to_arrow(), "order": mix_order(frame, seed),
                     "id": frame.get_column("id").to_arrow()})


def apply_mix(batch: pa.Table, plan: dict, seed: int) -> pa.Table:
    """mix.mix_sources row by row: `plan[source]` holds the target and the cutoff (order, id) of the
    seeded order, so each record knows whether it is kept, dropped or repeated without the others."""
    from dataforge.data.mix import STAGE, downsample_detail

    frame = frame_of(batch)
    train = frame.filter(pl.col(R.SPLIT) == "train")
    rest = frame.filter(pl.col(R.SPLIT) != "train")
    order = mix_order(train, seed)
    ids = train.get_column("id").to_list()
    sources = train.get_column("source").to_list()
    keep = np.zeros(train.height, dtype=bool)
    copies = np.zeros(train.height, dtype=np.int64)
    reasons = [None] * train.height
    for i, (src, o, rid) in enumerate(zip(sources, order.tolist(), ids, strict=True)):
        p = plan.get(src)
        if p is None:
            reasons[i] = ("not_in_mix", f"source '{src}' is not in mix.proportions")
            continue
        before = p["cutoff"] is not None and (o, rid) <= tuple(p["cutoff"])
        if p["want"] <= p["n"]:
            keep[i] = before or p["want"] == p["n"]
            if not keep[i]:
                reasons[i] = ("downsampled", downsample_detail(src, p["want"], p["n"], p["share"], p["total"]))
        else:
            keep[i] = True
            copies[i] = p["want"] // p["n"] - 1 + int(before)
    kept = [train.filter(pl.Series(keep))]
    for k in range(1, int(copies.max(initial=0)) + 1):
        rep = train.filter(pl.Series(copies >= k))
        kept.append(rep.with_columns((pl.col("id") + f"#rep{k}").alias("id"), pl.lit(k, pl.Int64).alias(REP)))
    rejected = []
    for reason in ("not_in_mix", "downsampled"):
        mask = np.array([r is not None and r[0] == reason for r in reasons], dtype=bool)
        if mask.any():
            details = pl.Series([r[1] for r in reasons if r is not None and r[0] == reason], dtype=pl.Utf8)
            rejected.append(make_rejects(train.filter(pl.Series(mask)), STAGE, reason, details))
    result = StageResult(kept=pl.concat([*kept, rest]), rejected=pl.concat(rejected) if rejected else R.empty_rejects())
    return emit(result.kept, result, "")

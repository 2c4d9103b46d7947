"""The Ray engine's steps, one method per stage (see ray_engine for what each distributes and how).

Every step takes the kept records as a Ray Dataset and returns the next one, materialized; its side
rows (rejects, clusters, contamination, statistics) are set aside in `sides` for publishing, and its
statistics merged from the batches into `stats`. Nothing here collects records to the driver: the
driver reads only counts, the sorted split groups and mix keys as a stream, and small tallies.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from dataforge.data import record as R
from dataforge.data.engines import ray_batches as B
from dataforge.data.engines.remote_inputs import fetch, is_url
from dataforge.data.stage import BuildContext, Stage, StageResult

BATCH = 8192          # records per map_batches call: large enough that per-call costs vanish
BUCKET_ROWS = 50_000  # records per hash bucket of a partitioned step
STATELESS = {"clean"}  # per-record stages that load nothing, run as tasks


def connect(address: str | None) -> bool:
    """Join the cluster at `address`, or the runtime this process runs, or start a local one; True
    when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        from dataforge.errors import StateError

        raise StateError(f"cannot reach the Ray cluster at {address}: {e} (is `ray start` running there?)") from None
    return True


def configure() -> None:
    """Task-based sort shuffles: Ray's default hash shuffle starts an aggregator actor per partition
    (200 by default), which costs more than a small build takes and, on one-CPU nodes, holds the
    CPUs the map tasks need."""
    import logging

    import ray
    from ray.data.context import ShuffleStrategy

    logging.getLogger("ray.data").setLevel(logging.WARNING)   # our own step display reports progress
    data = ray.data.DataContext.get_current()
    data.enable_progress_bars = False
    data.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED


def _collect_task(index: int, spec_json: dict, on_error: str, base_dir: str | None) -> tuple[pa.Table, dict]:
    """Read one input (a Ray task): its records with `_ray_row` and `_ray_rep`, and its reject rows."""
    from dataforge.config.build import InputSpec, OnError
    from dataforge.data.collect import collect_input

    spec = InputSpec.model_validate(spec_json)
    url = spec.path if is_url(spec.path) else None
    with tempfile.TemporaryDirectory(prefix="dataforge-input-") as tmp:
        if url is not None:
            spec = spec.model_copy(update={"path": str(fetch(url, Path(tmp)))})
        records, rejects, stats = collect_input(index, spec, OnError(on_error), Path(base_dir) if base_dir else None)
    if url is not None:   # the record came from the URL, not from the worker's temporary copy
        records = records.with_columns(pl.lit(url).alias("origin_file"))
        rejects = rejects.with_columns(pl.lit(url).alias("origin_file"))
        stats["path"] = url
    records = records.with_columns(((pl.int_range(pl.len(), dtype=pl.Int64)) + (index << 40)).alias(B.ROW),
                                   pl.lit(0, pl.Int64).alias(B.REP))
    return B.emit(records, StageResult(kept=records, rejected=rejects)), stats


_BROADCAST: dict[str, pl.DataFrame] = {}


def _with_table(batch: pa.Table, fn: Any, refs: list, kwargs: dict) -> pa.Table:
    """`fn(batch, table)` where the table (removed records, chosen split groups, labels: small) comes
    through the object store, fetched once per worker process, not once per batch."""
    import ray

    key = ",".join(r.hex() for r in refs)
    if key not in _BROADCAST:
        _BROADCAST.clear()
        tables = ray.get(refs)
        _BROADCAST[key] = B.frame_of(pa.concat_tables(tables, promote_options="default")) if tables else pl.DataFrame()
    return fn(batch, _BROADCAST[key], **kwargs)


class Steps:
    def __init__(self, ctx: BuildContext, cfg_json: dict, base_dir: Path | None):
        import ray

        self.ctx, self.cfg_json = ctx, cfg_json
        self.base_dir = str(base_dir) if base_dir else None
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        configure()
        self.sides: list = []
        self.stats: dict[str, dict] = {}
        self.read: dict[str, int] = {}
        self.counts: list[dict] = []
        self.buckets = 2 * self.cpus

    def run(self, stage: Stage, records: Any) -> Any:
        n_in = records.count() if records is not None else 0
        self.buckets = max(2 * self.cpus, n_in // BUCKET_ROWS + 1)
        self.counts.append({"name": stage.name, "in": n_in})
        step = getattr(self, f"_{stage.name}", None)
        return step(stage, records) if step else self._per_record(stage, records)

    # ------------------------------------------------------------ plumbing

    def _map(self, ds: Any, func: Any, **kwargs) -> Any:
        return ds.map_batches(func, batch_format="pyarrow", batch_size=BATCH, fn_kwargs=kwargs or None)

    def _by_bucket(self, ds: Any, cols: list[str], fn: Any, **kwargs) -> Any:
        """Hash-partition `ds` on `cols` and run `fn` on whole buckets: every row with the same
        values of `cols` meets the others in one call."""
        keyed = self._map(ds, _add_bucket, cols=cols, buckets=self.buckets)
        return keyed.groupby("_bucket", num_partitions=2 * self.cpus).map_groups(fn, batch_format="pyarrow", fn_kwargs=kwargs or None)

    def _broadcast(self, ds: Any, fn: Any, table_ds: Any, **kwargs) -> Any:
        refs = table_ds.materialize().to_arrow_refs() if table_ds is not None else []
        return self._map(ds, _with_table, fn=fn, refs=refs, kwargs=kwargs)

    def _tally(self, ds: Any, fn: Any, **kwargs) -> dict:
        """Small per-batch statistics of `ds`, summed on the driver."""
        total: dict = {}
        for row in self._map(ds, _tally_batch, fn=fn, kwargs=kwargs).take_all():
            total = B.merge_stats(total, json.loads(row["t"]))
        return total

    def _split_out(self, name: str, out: Any) -> Any:
        out = out.materialize()
        kept = self._map(out, B.kept_rows).materialize()
        self.sides.append(self._map(out, B.side_rows))
        stats: dict = {}
        for row in self._map(out, _stats_rows, kind=f"stats:{name}").take_all():
            stats = B.merge_stats(stats, json.loads(row[B.JSON]))
        self.stats[name] = stats
        self.counts[-1]["out"] = kept.count()
        return kept

    # ------------------------------------------------------------ stages

    def _collect(self, stage: Stage, _: Any) -> Any:
        import ray

        from dataforge.data.formats import column_problems
        from dataforge.errors import ConfigError

        specs = self.ctx.resolve(self.ctx.cfg.inputs)
        problems = [f"inputs[{i}].{p}" for i, spec in enumerate(specs) for p in column_problems(spec)]
        if problems:
            raise ConfigError(problems)
        task = ray.remote(num_returns=2, max_retries=3)(_collect_task)
        refs = [task.remote(i, spec.model_dump(mode="json"), self.ctx.cfg.on_error.value, self.base_dir)
                for i, spec in enumerate(specs)]
        per_input = ray.get([r[1] for r in refs])
        kept: dict[str, int] = {}
        for st in per_input:
            self.read[st["source"]] = self.read.get(st["source"], 0) + st["read"]
            kept[st["source"]] = kept.get(st["source"], 0) + st["kept"]
        ignored: dict[str, dict] = {}
        for st in per_input:
            ignored[st["source"]] = B.merge_stats(ignored.get(st["source"], {}), st["ignored_fields"])
        out = self._split_out("collect", ray.data.from_arrow_refs([r[0] for r in refs]))
        self.stats["collect"] = {
            "read": self.read, "inputs": per_input,
            "ignored_fields": {s: dict(sorted(c.items())) for s, c in ignored.items() if c},
            "warnings": [f"source '{s}' kept no record: all {n} read were rejected; check its format and field names"
                         for s, n in self.read.items() if not kept.get(s)]}
        self.counts[-1]["in"] = sum(self.read.values())
        return out

    def _per_record(self, stage: Stage, records: Any) -> Any:
        if stage.name in STATELESS:   # nothing to load: plain tasks, no actor pool to start
            return self._split_out(stage.name, self._map(records, _stateless, stage=stage, cfg_json=self.cfg_json,
                                                         base_dir=self.base_dir))
        from ray.data import ActorPoolStrategy

        out = records.map_batches(B.RecordStage, batch_format="pyarrow", batch_size=BATCH,
                                  compute=ActorPoolStrategy(min_size=1, max_size=self.cpus),
                                  fn_constructor_args=(stage, self.cfg_json, self.base_dir))
        return self._split_out(stage.name, out)

    def _dedupe_exact(self, stage: Stage, records: Any) -> Any:
        return self._split_out("dedupe_exact", self._by_bucket(records, [R.CONTENT_HASH], B.exact_in_bucket))

    def _dedupe_near(self, stage: Stage, records: Any) -> Any:
        from dataforge.data.minhash import lsh_shape

        near = self.ctx.cfg.dedupe.near
        fields = list(near.fields)
        bands, rows = lsh_shape(near.threshold, near.num_perm, near.bands)
        sig = {"fields": fields, "num_perm": near.num_perm, "seed": near.seed, "shingle_size": near.shingle_size}
        texts = self._map(records, B.near_texts, fields=fields, skip_sources=list(near.skip_sources)).materialize()
        band = self._map(texts, B.band_rows, **sig, bands=bands, rows=rows)
        pairs = self._by_bucket(self._by_bucket(band, ["band", "key"], B.bucket_pairs), ["a", "b"], B.unique_pairs)
        pairs = pairs.materialize()
        stats: dict[str, Any] = {"bands": bands, "rows": rows, "candidate_pairs": pairs.count(), "similar_pairs": 0,
                                 "kept_apart_by_field": dict.fromkeys(fields, 0), "duplicate_pairs": 0, "clusters": 0,
                                 "removed": 0}
        removed = None
        if stats["candidate_pairs"]:
            verdict = self._map(self._join_texts(pairs, texts), B.verify_pairs, **sig, threshold=near.threshold)
            verdict = verdict.materialize()
            tally = self._tally(verdict, "verdicts")
            stats["similar_pairs"] = tally.get("similar", 0)
            stats["kept_apart_by_field"] = {f: tally.get(f"apart:{f}", 0) for f in fields}
            edges = self._map(verdict, _edges).materialize()
            stats["duplicate_pairs"] = edges.count()
            if stats["duplicate_pairs"]:
                removed = self._removed(records, texts, self._components(edges), sig, near.keep.value)
                stats["removed"] = removed.count()
                stats["clusters"] = len(removed.unique("keeper"))
        kept = self._split_out("dedupe_near", self._broadcast(records, B.apply_near, removed))
        seen, lost = self.stats["dedupe_near"].get("seen", {}), self.stats["dedupe_near"].get("lost", {})
        stats["by_source"] = {s: {"in": seen[s], "removed": lost.get(s, 0), "skipped": s in near.skip_sources}
                              for s in sorted(seen)}
        self.stats["dedupe_near"] = stats
        return kept

    def _join_texts(self, pairs: Any, texts: Any) -> Any:
        """`pairs` (a, b) with the compared fields of both records, as a_<field> and b_<field>: the
        pair list (small: about as many pairs as duplicates) goes to every text batch, and the two
        sides of each pair meet in a hash bucket."""
        members = self._broadcast(texts, B.pair_members, pairs)
        return self._by_bucket(members, ["a", "b"], B.pair_up)

    def _components(self, edges: Any) -> Any:
        """(node, label) of every node of the duplicate edges, the label being its component's
        smallest `_row`: min-label propagation, one join and one groupby per round, until no label
        changes (rounds: about the largest component's diameter)."""
        adj = self._map(edges, _both_ways).materialize()
        labels = self._by_bucket(adj, ["u"], _first_labels).materialize()
        while True:
            merged = self._broadcast(adj, _proposals, labels).union(self._map(labels, _current))
            new = self._by_bucket(merged, ["node"], _min_label).materialize()
            labels = self._map(new, _drop_changed).materialize()
            if not new.sum("changed"):
                return labels

    def _removed(self, records: Any, texts: Any, labels: Any, sig: dict, keep: str) -> Any:
        """(node, keeper, similarity, kept_id, kept_origin) of every record near-dedupe removes."""
        if keep == "first":
            keepers = self._map(labels, _label_keepers)
        else:
            keepers = self._by_bucket(self._broadcast(texts, _with_label, labels), ["label"], B.keepers_longest)
        gone = self._map(keepers, _gone).materialize()
        if not gone.count():
            return gone
        return self._map(self._join_texts(gone, texts), B.removal_similarity, **sig).materialize()

    def _split(self, stage: Stage, records: Any) -> Any:
        from dataforge.data.split import _sizes

        cfg, seed = self.ctx.cfg.split, self.ctx.cfg.seed
        keys = self._map(records, _split_keys, stratify=cfg.stratify_by_source)
        groups = self._by_bucket(keys, ["key"], _split_groups).materialize()
        strata = self._tally(groups, "strata")
        wanted = _sizes(cfg, strata) if strata else {}
        left = {s: list(v) for s, v in wanted.items()}
        chosen_keys: list[str] = []
        chosen_split: list[str] = []
        drawn = self._map(groups, B.split_draws, seed=seed).sort(["stratum", "draw", "key"])
        for batch in drawn.iter_batches(batch_format="pyarrow", batch_size=65536):
            for stratum, key, size in zip(*(batch.column(c).to_pylist() for c in ("stratum", "key", "size")), strict=True):
                room = left[stratum]
                if size <= room[0]:
                    room[0] -= size
                    chosen_keys.append(key)
                    chosen_split.append("test")
                elif size <= room[1]:
                    room[1] -= size
                    chosen_keys.append(key)
                    chosen_split.append("val")
        import ray

        chosen = pa.table({"key": pa.array(chosen_keys, pa.large_string()), R.SPLIT: pa.array(chosen_split, pa.large_string())})
        out = self._map(records, _with_table, fn=B.assign_split, refs=[ray.put(chosen)], kwargs={})
        return self._split_out("split", out)

    def _mix(self, stage: Stage, records: Any) -> Any:
        from dataforge.data.mix import mix_targets

        cfg, seed = self.ctx.cfg.mix, self.ctx.cfg.seed
        keys = self._map(records, B.mix_keys, seed=seed).materialize()
        have = self._tally(keys, "sources")
        targets = mix_targets(have, cfg)
        if targets is None:
            self.counts[-1]["out"] = self.counts[-1]["in"]
            self.stats["mix"] = {"target": {}, "total": 0, "counts": {}, "achieved": {}, "repeated": {}}
            return records
        share, total, target = targets
        plan = {s: {"want": target[s], "n": have[s], "share": share[s], "total": total} for s in target if s in have}
        wanted_at = {}
        for s, p in plan.items():
            want, n = p["want"], p["n"]
            p["cutoff"] = None   # the (order, id) of the last record kept, or of the last repeated once more
            if 0 < want < n:
                wanted_at[s] = want - 1
            elif want > n and want % n:
                wanted_at[s] = want % n - 1
        position: dict[str, int] = {}
        for batch in keys.sort(["source", "order", "id"]).iter_batches(batch_format="pyarrow", batch_size=65536):
            for s, o, i in zip(*(batch.column(c).to_pylist() for c in ("source", "order", "id")), strict=True):
                k = position.get(s, 0)
                if wanted_at.get(s) == k:
                    plan[s]["cutoff"] = [o, i]
                position[s] = k + 1
        kept = self._split_out("mix", self._map(records, B.apply_mix, plan=plan, seed=seed))
        repeated = {s: p["want"] - p["n"] for s, p in plan.items() if p["want"] > p["n"]}
        self.stats["mix"] = {"target": share, "total": total, "counts": {s: target.get(s, 0) if s in have else 0 for s in share},
                             "achieved": {s: (target.get(s, 0) if s in have else 0) / total if total else 0.0 for s in share},
                             "repeated": repeated}
        return kept


# ---------------------------------------------------------------- small batch functions


def _stateless(batch: pa.Table, stage: Stage, cfg_json: dict, base_dir: str | None) -> pa.Table:
    return B.RecordStage(stage, cfg_json, base_dir)(batch)


def _add_bucket(batch: pa.Table, cols: list[str], buckets: int) -> pa.Table:
    frame = B.frame_of(batch)
    return frame.with_columns((pl.struct(cols).hash(seed=0) % buckets).cast(pl.Int64).alias("_bucket")).to_arrow()


def _tally_batch(batch: pa.Table, fn: str, kwargs: dict) -> pa.Table:
    frame = B.frame_of(batch)
    if fn == "verdicts":
        out = {"similar": int(frame.get_column("similar").sum())}
        out.update({f"apart:{a}": n for a, n in frame.get_column("apart").drop_nulls().value_counts().iter_rows()})
    elif fn == "strata":
        out = {s: int(n) for s, n in frame.group_by("stratum").agg(pl.col("size").sum()).iter_rows()}
    else:
        out = dict(frame.get_column("source").value_counts().iter_rows())
    return pa.table({"t": [json.dumps(out)]})


def _stats_rows(batch: pa.Table, kind: str) -> pa.Table:
    return batch.filter(pa.compute.equal(batch[B.SIDE], kind)).select([B.JSON])


def _edges(batch: pa.Table) -> pa.Table:
    frame = B.frame_of(batch)
    return frame.filter(pl.col("similar") & pl.col("apart").is_null()).select("a", "b").to_arrow()


def _both_ways(batch: pa.Table) -> pa.Table:
    a, b = batch.column("a"), batch.column("b")
    return pa.table({"u": pa.concat_arrays([a.combine_chunks(), b.combine_chunks()]),
                     "v": pa.concat_arrays([b.combine_chunks(), a.combine_chunks()])})


def _first_labels(group: pa.Table) -> pa.Table:
    frame = B.frame_of(group)
    return frame.group_by("u").agg(pl.min_horizontal(pl.col("u").first(), pl.col("v").min()).alias("label")) \
        .select(pl.col("u").alias("node"), "label").to_arrow()


def _proposals(batch: pa.Table, labels: pl.DataFrame) -> pa.Table:
    """Each edge (u, v) proposes v's label to u (a broadcast join with the current labels)."""
    frame = B.frame_of(batch).join(labels, left_on="v", right_on="node", how="inner")
    return frame.select(pl.col("u").alias("node"), "label", pl.lit(None, pl.Int64).alias("old")).to_arrow()


def _current(batch: pa.Table) -> pa.Table:
    return pa.table({"node": batch.column("node"), "label": batch.column("label"), "old": batch.column("label")})


def _min_label(group: pa.Table) -> pa.Table:
    frame = B.frame_of(group)
    new = frame.group_by("node").agg(pl.col("label").min(), pl.col("old").min().alias("was"))
    return new.select("node", "label", (pl.col("label") < pl.col("was")).cast(pl.Int64).alias("changed")).to_arrow()


def _drop_changed(batch: pa.Table) -> pa.Table:
    return batch.select(["node", "label"])


def _label_keepers(batch: pa.Table) -> pa.Table:
    return pa.table({"node": batch.column("node"), "keeper": batch.column("label")})


def _with_label(batch: pa.Table, labels: pl.DataFrame) -> pa.Table:
    frame = B.frame_of(batch).join(labels, left_on=B.ROW, right_on="node", how="inner")
    return frame.select(pl.col(B.ROW).alias("node"), "label", "_outlen").to_arrow()


def _gone(batch: pa.Table) -> pa.Table:
    frame = B.frame_of(batch).filter(pl.col("node") != pl.col("keeper"))
    return frame.select(pl.col("node").alias("a"), pl.col("keeper").alias("b")).to_arrow()


def _split_keys(batch: pa.Table, stratify: bool) -> pa.Table:
    frame = B.frame_of(batch)
    return frame.select(pl.col(R.CONTENT_HASH).alias("key"),
                        pl.col("source") if stratify else pl.lit("").alias("source")).to_arrow()


def _split_groups(group: pa.Table) -> pa.Table:
    frame = B.frame_of(group)
    return frame.group_by("key").agg(pl.col("source").min().alias("stratum"), pl.len().cast(pl.Int64).alias("size")).to_arrow()

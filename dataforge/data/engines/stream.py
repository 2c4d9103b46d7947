"""The stream engine: the build's stages over bounded chunks of records, with the same output as the
in-memory engine (dataforge.data.pipeline) at any corpus size.

Memory. Records flow in chunks of `chunk_size`; what is held for the whole corpus is compact: the
content hashes seen (uint64, `SeenHashes`), the LSH band keys (bands x uint64 per record, read back
once for the candidate search), per-record flags and lengths, and for the split the id, source and
content hash of the records that reach it. Signatures and text are never held for the whole corpus.

Passes. Every stage runs the same pure function as in memory, chunk by chunk, in the stage order:
  1. read the inputs block by block (dataforge.data.collect.collect_blocks), clean, drop exact copies
     (the first copy in input order is kept, as `is_first_distinct` does), and add band keys to the
     near-dedupe index; the surviving records go to a Parquet spool in the run folder.
  2. decide near duplicates on the band keys (dataforge.data.engines.stream_near), then re-read the
     spool to drop them, then reference dedupe and decontamination (each record is judged alone, so
     chunks give the same result), spooling what reaches the split.
  3. split and mix on the compact (id, source, content hash) frame with `split_records` and
     `mix_sources` themselves; re-read the spool to apply them, template, tokenize, and write each
     split's Parquet, Alpaca lines and tokenized shards as they are produced.
Outputs go to temporary paths and are renamed into the run folder only after the accounting check
(read = kept + rejected, per source) has passed; the manifest goes last. The dataset fingerprint is
computed over the same tables with dataforge.util.fingerprint.ContentHasher, so it equals the local
engine's. Rejects are grouped by stage in build order (the local engine sorts them by stage name,
source and origin), so rejects.jsonl holds the same rows in another order.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import polars as pl

from dataforge import __version__
from dataforge.config.build import BuildConfig
from dataforge.data import record as R
from dataforge.data.engines.stream_near import NearDecision, NearIndex
from dataforge.data.engines.stream_output import JsonlSink, Tally
from dataforge.data.pipeline import (
    MANIFEST,
    BuildResult,
    _tokenize_settings,
    prepare_run,
)
from dataforge.data.runner import code_version
from dataforge.data.stage import BuildContext, make_rejects
from dataforge.data.stages import BUILD_STAGES, SPLITS
from dataforge.errors import ConfigError
from dataforge.util import atomic
from dataforge.util.fingerprint import fingerprint, library_versions
from dataforge.util.progress import StepProgress

# Records per chunk: about 100 MB of records and signatures at a time.
CHUNK_SIZE = 50_000
# Bytes of a JSON-lines input read at a time (about 45,000 Alpaca records; the parsed block, its raw
# bytes and the reader's buffers are a few times this).
BLOCK_BYTES = 16 << 20
SPOOL = ".stream"
SIDE_FILES = ["clusters-exact", "clusters-near", "contamination"]
# Stats that are settings or whole-build sizes, the same in every chunk: taken once, not summed.
_SETTING_STATS = {"ngram", "eval_texts", "references", "bands", "rows"}


class SeenHashes:
    """The set of uint64 content hashes seen so far, as sorted arrays merged like an LSM tree: 8 bytes
    per distinct record and O(log n) sorted runs, so a membership test of a chunk is a few binary searches."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def first_seen(self, h: np.ndarray) -> np.ndarray:
        """Whether each hash is its first occurrence (in this chunk, in order, and in all chunks before)."""
        order = np.argsort(h, kind="stable")
        hs = h[order]
        first = np.zeros(len(h), dtype=bool)
        first[order[np.r_[True, hs[1:] != hs[:-1]]] if len(h) else order] = True
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, h), len(run) - 1)
            first &= run[pos] != h
        new = np.sort(h[first])
        while self.runs and len(self.runs[-1]) <= 2 * len(new):
            new = np.sort(np.concatenate([self.runs.pop(), new]))
        if len(new):
            self.runs.append(new)
        return first


def run_build_stream(cfg: BuildConfig, *, overwrite: bool = False, base_dir: Path | None = None,
                     show_progress: bool = True, chunk_size: int = CHUNK_SIZE, block_bytes: int = BLOCK_BYTES) -> BuildResult:
    """Build `cfg` into `cfg.output` in bounded memory; same outputs and fingerprint as `run_build`."""
    run = prepare_run(cfg, base_dir, overwrite, BUILD_STAGES)
    if run.up_to_date is not None:
        return run.up_to_date
    ctx, planned, run_dir = run.ctx, run.planned, run.run_dir
    spool = run_dir / SPOOL
    shutil.rmtree(spool, ignore_errors=True)  # a killed stream run's spool, inside the run folder
    spool.mkdir(parents=True)
    progress = StepProgress("build", enabled=show_progress)
    try:
        with progress:
            build = _StreamBuild(ctx, planned, spool, chunk_size, block_bytes, progress)
            manifest = build.run(run_dir, {**run.identity, "build_key": planned[-1].key})
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return BuildResult(run_dir, manifest, reused=[])


def _detached(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its own copy of its strings. Rows gathered from a larger frame keep that frame's
    whole string buffers alive (polars' string views point into them), so the candidates gathered
    from every spool file would hold the text of the whole corpus; through Arrow's plain strings
    only the gathered rows' bytes are copied."""
    return pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))


class _StreamBuild:
    def __init__(self, ctx: BuildContext, planned: list, spool: Path, chunk_size: int, block_bytes: int,
                 progress: StepProgress):
        self.ctx, self.cfg, self.spool, self.progress = ctx, ctx.cfg, spool, progress
        self.chunk_size, self.block_bytes = chunk_size, block_bytes
        self.stages = {p.stage.name: p for p in planned}
        self.tally = Tally()
        self.flow = {name: Counter() for name in self.stages}      # records in / out per stage
        self.seconds: Counter = Counter()
        self.stats: dict[str, dict] = {name: {} for name in self.stages}
        self.side: dict[str, JsonlSink] = {}

    # ------------------------------------------------------------------ plumbing
    def _timed(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - t0
        return out

    def _rejects(self, stage: str, rejects: pl.DataFrame) -> None:
        if rejects.height:
            self.tally.add_rejects(rejects)
            self.side[f"rejects-{stage}"].write(rejects.to_dicts())

    # ------------------------------------------------------------------ the build
    def run(self, run_dir: Path, identity: dict) -> dict:
        with ExitStack() as spools:
            for name in SIDE_FILES + [f"rejects-{s}" for s in self.stages]:
                self.side[name] = JsonlSink(spools, self.spool / f"{name}.jsonl", atomic_write=False)
            with self.progress.step("read, clean, dedupe exact") as step:
                near = self._pass_read()
                step.done(detail=f"{sum(self.tally.read.values()):,} read, {self._n1:,} distinct")
            with self.progress.step("dedupe near, filter") as step:
                decision = self._timed("dedupe_near", near.decide, self._read_rows) if near else None
                compact = self._pass_filter(decision)
                step.done(detail=f"{compact.height:,} reach the split")
            with self.progress.step("split, mix, template, tokenize, write") as step:
                manifest = self._pass_write(run_dir, compact, identity)
                step.done(detail=str(run_dir))
        return manifest

    def _pass_read(self) -> NearIndex | None:
        from dataforge.data.clean import clean
        from dataforge.data.collect import collect_blocks
        from dataforge.data.formats import column_problems

        problems = [f"inputs[{i}].{p}" for i, spec in enumerate(self.cfg.inputs) for p in column_problems(spec)]
        if problems:
            raise ConfigError(problems)
        exact = "dedupe_exact" in self.stages
        near = NearIndex(self.cfg.dedupe.near, self.cfg.dedupe.near.seed, self.spool) if "dedupe_near" in self.stages else None
        seen, dup_hashes = SeenHashes(), []
        self._spool1_files, self._dups_files, self._n1 = [], [], 0
        per_input, ignored = [], {}
        for index, spec in enumerate(self.cfg.inputs):
            stats: dict = {}
            for records, rejects, block_stats in self._timed_iter("collect", collect_blocks(
                    index, spec, self.cfg.on_error, self.block_bytes)):
                stats = block_stats   # running totals of this input
                self._rejects("collect", rejects)
                self.flow["collect"]["out"] += records.height
                for lo in range(0, records.height, self.chunk_size):
                    part = records.slice(lo, self.chunk_size)
                    result = self._timed("clean", clean, part, self.cfg.clean)
                    self._rejects("clean", result.rejected)
                    self._count("clean", part.height, result.kept.height)
                    self.stats["clean"] = _merge(self.stats["clean"], result.stats)
                    kept = result.kept
                    if exact:
                        t0 = time.perf_counter()
                        h = kept.get_column(R.CONTENT_HASH).str.to_integer(base=16, dtype=pl.UInt64).to_numpy()
                        first = seen.first_seen(h)
                        if not first.all():
                            dups = kept.filter(pl.Series(~first))
                            dup_hashes.append(h[~first])
                            self._dups_files.append(_write_spool(self.spool, "dups", self._dups_files, dups))
                            kept = kept.filter(pl.Series(first))
                        self.seconds["dedupe_exact"] += time.perf_counter() - t0
                        self._count("dedupe_exact", result.kept.height, kept.height)
                    if near is not None:
                        self._timed("dedupe_near", near.add, kept)
                    self._spool1_files.append(_write_spool(self.spool, "s1", self._spool1_files, kept))
                    self._n1 += kept.height
            self.tally.read[spec.source] += stats["read"]
            self.flow["collect"]["in"] += stats["read"]
            per_input.append(stats)
            ignored.setdefault(spec.source, Counter()).update(stats["ignored_fields"])
        self.dup_hashes = np.unique(np.concatenate(dup_hashes)) if dup_hashes else np.zeros(0, np.uint64)
        self.stats["collect"] = {"read": dict(self.tally.read), "inputs": per_input,
                                 "ignored_fields": {s: dict(sorted(c.items())) for s, c in ignored.items() if c},
                                 "warnings": self._empty_sources()}
        return near

    def _timed_iter(self, stage: str, it):
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.seconds[stage] += time.perf_counter() - t0
            yield item

    def _count(self, stage: str, n_in: int, n_out: int) -> None:
        self.flow[stage]["in"] += n_in
        self.flow[stage]["out"] += n_out

    def _read_rows(self, rows: np.ndarray, columns: list[str]) -> pl.DataFrame:
        """Columns of the pass-1 spool's records at sorted global row numbers `rows`."""
        parts = [pl.DataFrame(schema={c: R.RECORD_SCHEMA.get(c, pl.Utf8) for c in columns})]
        for path, start, n in self._spool1_files:
            lo, hi = np.searchsorted(rows, [start, start + n])
            if hi > lo:
                parts.append(_detached(pl.read_parquet(path, columns=columns)[rows[lo:hi] - start]))
        return pl.concat(parts)

    def _empty_sources(self) -> list[str]:
        """The collect step's warnings: one per source that kept no record (as collect._empty_sources)."""
        warnings = []
        for src, n in self.tally.read.items():
            reasons = self.tally.by_stage_source.get(("collect", src), Counter())
            if n > sum(reasons.values()):
                continue
            warnings.append(f"source '{src}' kept no record: all {n} read were rejected "
                            f"({', '.join(f'{r} {k}' for r, k in sorted(reasons.items()))}); "
                            "check its format and field names")
        return warnings

    def _pass_filter(self, decision: NearDecision | None) -> pl.DataFrame:
        """Pass 2: drop near duplicates, reference duplicates and contaminated records; spool the rest
        and return the compact frame the split and mix decide on."""
        from dataforge.data.decontaminate import decontaminate
        from dataforge.data.dedupe import exact_owners, near_rejects, reference_duplicates

        ref = self.stages.get("dedupe_reference")
        ref_texts = ref.stage.texts(self.ctx) if ref else None
        dc = self.stages.get("decontaminate")
        eval_sets = dc.stage.eval_sets(self.ctx) if dc else None
        dup_hex = pl.Series([f"{int(x):016x}" for x in self.dup_hashes.tolist()], dtype=pl.Utf8)
        owners, compact, self._s2_files = [], [], []
        # mix_sources makes reject rows (origin, and the record: `kind` is the smallest record column);
        # the stream engine rebuilds them from the full records in pass 3.
        mix_cols = ["origin_file", "origin_line", "kind"] if "mix" in self.stages else []
        for path, start, _ in self._spool1_files:
            frame = pl.read_parquet(path)
            if len(dup_hex):
                owners.append(exact_owners(frame.filter(pl.col(R.CONTENT_HASH).is_in(dup_hex.implode()))))
            if decision is not None:
                frame = self._timed("dedupe_near", self._apply_near, frame, start, decision, near_rejects)
            frame = frame.with_columns(pl.col("id").alias(R.CLUSTER_ID))
            if ref:
                near_cfg = self.cfg.dedupe.reference_settings
                result = self._timed("dedupe_reference", reference_duplicates, frame, ref_texts, near_cfg, near_cfg.seed)
                frame = self._after("dedupe_reference", frame, result)
            if dc:
                result = self._timed("decontaminate", decontaminate, frame, eval_sets, self.cfg.decontaminate.ngram)
                self.side["contamination"].write(result.extra["contamination"])
                frame = self._after("decontaminate", frame, result)
            self._s2_files.append(_write_spool(self.spool, "s2", self._s2_files, frame))
            compact.append(frame.select("id", "source", R.CONTENT_HASH, *mix_cols))
        if decision is not None:
            self.stats["dedupe_near"] = decision.stats
        if "dedupe_exact" in self.stages:
            self._exact_rejects(pl.concat(owners) if owners else None)
        return pl.concat(compact) if compact else pl.DataFrame(schema={"id": pl.Utf8, "source": pl.Utf8,
                                                                       R.CONTENT_HASH: pl.Utf8})

    def _after(self, stage: str, frame: pl.DataFrame, result) -> pl.DataFrame:
        self._rejects(stage, result.rejected)
        self._count(stage, frame.height, result.kept.height)
        self.stats[stage] = _merge(self.stats[stage], result.stats)
        return result.kept

    def _apply_near(self, frame: pl.DataFrame, start: int, d: NearDecision, near_rejects) -> pl.DataFrame:
        lo, hi = np.searchsorted(d.gone, [start, start + frame.height])
        self._count("dedupe_near", frame.height, frame.height - int(hi - lo))
        if hi == lo:
            return frame
        local = d.gone[lo:hi] - start
        keeper = d.keeper[lo:hi].tolist()
        removed = frame[local].with_columns(
            pl.Series("kept_id", [d.names[k][0] for k in keeper], dtype=pl.Utf8),
            pl.Series("kept_origin", [d.names[k][1] for k in keeper], dtype=pl.Utf8),
            pl.Series("similarity", d.similarity[lo:hi]))
        rejected, clusters = near_rejects(removed)
        self._rejects("dedupe_near", rejected)
        self.side["clusters-near"].write(clusters)
        mask = np.ones(frame.height, dtype=bool)
        mask[local] = False
        return frame.filter(pl.Series(mask))

    def _exact_rejects(self, owners: pl.DataFrame | None) -> None:
        from dataforge.data.dedupe import exact_rejects

        removed_n = 0
        for path, _, _ in self._dups_files:
            dups = pl.read_parquet(path)
            removed = dups.join(owners, on=R.CONTENT_HASH, how="left", maintain_order="left")
            rejected, clusters = exact_rejects(removed)
            self._rejects("dedupe_exact", rejected)
            self.side["clusters-exact"].write(clusters)
            removed_n += dups.height
        self.stats["dedupe_exact"] = {"removed": removed_n}

    # ------------------------------------------------------------------ pass 3 and publish
    def _pass_write(self, run_dir: Path, compact: pl.DataFrame, identity: dict) -> dict:
        from dataforge.data.split import split_records

        t0 = time.perf_counter()
        labels = split_records(compact.with_columns(pl.col("id").alias(R.CLUSTER_ID)), self.cfg.split,
                               self.cfg.seed).get_column(R.SPLIT)
        self._count("split", compact.height, compact.height)
        self.seconds["split"] += time.perf_counter() - t0
        mix = self._timed("mix", self._mix_plan, compact, labels) if "mix" in self.stages else None
        del compact
        from dataforge.data.engines.stream_write import SplitWriter

        with ExitStack() as outputs:
            writer = SplitWriter(self, outputs, run_dir)
            offset = 0
            for path, _, n in self._s2_files:
                frame = pl.read_parquet(path).with_columns(labels.slice(offset, n))
                if mix is not None:
                    frame = self._timed("mix", self._apply_mix, frame, offset, mix)
                writer.write(frame)
                offset += n
            writer.finish()
            sources = self.tally.sources(SPLITS, (self.stats.get("mix") or {}).get("repeated"))   # raises before anything is renamed into run_dir
            (run_dir / MANIFEST).unlink(missing_ok=True)
            manifest = self._manifest(identity, sources, writer)
        atomic.write_json(run_dir / MANIFEST, manifest)   # last: marks the run complete
        return manifest

    def _mix_plan(self, compact: pl.DataFrame, labels: pl.Series) -> dict:
        """Run `mix_sources` on the train rows' compact frame; return copies and reject reasons by row."""
        from dataforge.data.mix import mix_sources

        train = compact.with_row_index("_pos").filter(labels == "train")
        result = mix_sources(train, self.cfg.mix, self.cfg.seed)
        copies = np.zeros(compact.height, dtype=np.int32)
        pos, k = np.unique(result.kept.get_column("_pos").to_numpy(), return_counts=True)
        copies[pos] = k
        why = result.rejected.select("id", "reason", "detail").join(train.select("id", "_pos"), on="id")
        codes = why.select("reason", "detail").unique(maintain_order=True)
        reason = np.full(compact.height, -1, dtype=np.int32)
        coded = why.join(codes.with_row_index("_code"), on=["reason", "detail"])
        reason[coded.get_column("_pos").to_numpy()] = coded.get_column("_code").to_numpy()
        self.stats["mix"] = result.stats
        self._count("mix", compact.height, compact.height - train.height + result.kept.height)
        return {"copies": copies, "reason": reason, "codes": codes}

    def _apply_mix(self, frame: pl.DataFrame, offset: int, mix: dict) -> pl.DataFrame:
        """The chunk with its train rows re-sampled as `mix_sources` decided: dropped rows rejected,
        repeated rows followed by their copies `<id>#rep<k>`; val and test after, untouched."""
        train = (frame.get_column(R.SPLIT) == "train").to_numpy()
        rows = offset + np.flatnonzero(train)
        part = frame.filter(pl.Series(train))
        code = mix["reason"][rows]
        dropped = code >= 0
        if dropped.any():
            gone = part.filter(pl.Series(dropped))
            why = mix["codes"][code[dropped].tolist()]
            self._rejects("mix", make_rejects(gone, "mix", why.get_column("reason"), why.get_column("detail")))
        copies = mix["copies"][rows]
        take = np.repeat(np.arange(part.height), copies)
        rep = np.arange(len(take)) - np.repeat(np.cumsum(copies) - copies, copies)
        out = part[take].with_columns(
            pl.when(pl.Series(rep) > 0).then(pl.col("id") + "#rep" + pl.Series(rep).cast(pl.Utf8))
            .otherwise(pl.col("id")).alias("id"))
        return pl.concat([out, frame.filter(pl.Series(~train))])

    def _manifest(self, identity: dict, sources: dict, writer) -> dict:
        self.stats["template"] = {k: writer.template_info[k] for k in ("name", "sha256", "think")}
        if "tokenize" in self.stages:
            self.stats["tokenize"] = writer.tokenize_stats
        steps = []
        for name, p in self.stages.items():
            dropped = self.tally.by_stage.get(name, Counter())
            n_in = self.flow[name]["in"]
            n_out = self.flow[name]["out"]
            steps.append({"name": name, "in": n_in, "out": n_out, "dropped": dict(sorted(dropped.items())),
                          "seconds": round(self.seconds[name], 3), "reused": False, "key": p.key,
                          **({"reads": p.reads} if p.reads else {}),
                          **({"stats": self.stats[name]} if self.stats.get(name) else {})})
        template_info = writer.template_info
        tok_settings = _tokenize_settings(self.ctx) if "tokenize" in self.stages else None
        rejected = sum(sum(c.values()) for c in self.tally.rejected.values())
        return {
            "kind": "build", "complete": True, "dataforge_version": __version__, "code_version": code_version(),
            "engine": "stream",
            **{k: identity[k] for k in ("config", "config_fingerprint", "inputs")},
            "build_key": identity["build_key"],
            "fingerprint": fingerprint(writer.hasher.digest(), template_info, tok_settings),
            "seed": self.cfg.seed, "steps": steps, "sources": sources,
            "splits": dict(writer.rows), "rejected": rejected, "mix": self.stats.get("mix") or None,
            "template": template_info,
            "tokenize": {**tok_settings, **writer.tokenize_stats} if tok_settings else None,
            "reused_steps": [], "step_seconds": dict(self.progress.seconds), "libraries": library_versions(),
        }


def _write_spool(spool: Path, kind: str, files: list[tuple[Path, int, int]], frame: pl.DataFrame) -> tuple[Path, int, int]:
    """Write one chunk to the spool; returns (path, its first global row, rows)."""
    path = spool / f"{kind}-{len(files):06d}.parquet"
    frame.write_parquet(path, compression="lz4")
    return path, (files[-1][1] + files[-1][2] if files else 0), frame.height


def _merge(a: dict, b: dict) -> dict:
    """Stats of two chunks of one stage, summed: numbers add, dicts merge recursively; settings
    (`_SETTING_STATS`) and anything else are taken from the later chunk."""
    out = dict(a)
    for k, v in b.items():
        if k in _SETTING_STATS or isinstance(v, bool) or not isinstance(v, int | float | dict):
            out[k] = v
        elif isinstance(v, dict):
            out[k] = _merge(out.get(k, {}), v)
        else:
            out[k] = out.get(k, 0) + v
    return out

"""Publishing a Ray build: the driver streams the sorted records once and writes the run folder.

The records are sorted by (split, `_row`, `_rep`) on the cluster, so the driver reads them in the
local engine's order, a batch at a time, and appends each to its split's Parquet and Alpaca files
and its tokenized Arrow stream. Side rows are written as shards (rejects/, clusters/,
contamination/, `part-NNNNN.jsonl`). Per-source counts are summed on the way; the accounting
(records read = kept + rejected, per source) is checked before any folder is renamed into place,
and the manifest is written last, so a failed build leaves no manifest and no half-written folder.

The dataset fingerprint is computed the way content_fingerprint computes it, over the published
files read back one column at a time (never every column of every table at once).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataforge import __version__
from dataforge.data import record as R
from dataforge.data.engines import ray_batches as B
from dataforge.data.pipeline import MANIFEST, _alpaca_lines, _tokenize_settings
from dataforge.data.runner import PlannedStage, code_version
from dataforge.data.stage import BuildContext
from dataforge.errors import InternalError
from dataforge.util import atomic
from dataforge.util.fingerprint import fingerprint, library_versions
from dataforge.util.progress import StepProgress

SPLITS = B.SPLITS
TOKEN_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8())),
                          ("labels", pa.list_(pa.int32())), ("source", pa.string()), ("id", pa.string())])
SHARD_ROWS = 100_000
_INTERNAL = (B.ROW, B.REP, "_split_no", *(B.TOK + c for c in B.TOKEN_COLUMNS))


def _order(batch: pa.Table) -> pa.Table:
    frame = B.frame_of(batch)
    return frame.with_columns(pl.col(R.SPLIT).replace_strict({s: i for i, s in enumerate(SPLITS)}, return_dtype=pl.Int64)
                              .alias("_split_no")).to_arrow()


class _Shards:
    """JSON-lines shards of one side output, a new file every SHARD_ROWS rows."""

    def __init__(self, folder: Path):
        self.folder, self.n, self.rows, self.file = folder, 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, lines: list[str]) -> None:
        for line in lines:
            if self.file is None or self.rows >= SHARD_ROWS:
                self.close()
                self.file = open(self.folder / f"part-{self.n:05d}.jsonl", "w", encoding="utf-8")
                self.n, self.rows = self.n + 1, 0
            self.file.write(line + "\n")
            self.rows += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def publish(run_dir: Path, ctx: BuildContext, planned: list[PlannedStage], steps: Any, records: Any,
            progress: StepProgress, identity: dict) -> dict:
    with progress.step("write") as step:
        manifest = _write_all(run_dir, ctx, planned, steps, records, progress, identity)
        # Every folder is in place now (renamed as the writing finished); the manifest marks the run complete.
        atomic.write_json(run_dir / MANIFEST, manifest)
        step.done(detail=str(run_dir))
    return manifest


def _write_all(run_dir: Path, ctx: BuildContext, planned: list[PlannedStage], steps: Any, records: Any,
               progress: StepProgress, identity: dict) -> dict:
    from dataforge.data.tokenize import length_stats, list_lengths

    names = [p.stage.name for p in planned]
    tokenized = "tokenize" in names
    with contextlib.ExitStack() as stack:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST).unlink(missing_ok=True)
        folders = {name: stack.enter_context(atomic.atomic_path(run_dir / name, is_dir=True))
                   for name in ("splits", "rejects", "clusters", "contamination", *(("tokenized",) if tokenized else ()))}
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".ray-scratch-", dir=run_dir)))
        kept, by_split = _write_records(records, folders["splits"], scratch if tokenized else None)
        rejected, dropped = _write_sides(steps.sides, folders)
        sources = _accounting(steps.read, kept, rejected, by_split, (steps.stats.get("mix") or {}).get("repeated") or {})
        tables: dict[str, pa.Table] = {}
        tok_stats = None
        if tokenized:
            tok_cfg = ctx.cfg.tokenize
            tables = {s: pa.ipc.open_stream(pa.memory_map(str(scratch / f"{s}.arrow"))).read_all() for s in SPLITS}
            tok_stats = {"counts": {}, "lengths": {}, "encoded": {}}
            merged = steps.stats.get("tokenize", {})
            from dataforge.data.tokenize import COUNT_KEYS

            for s in SPLITS:
                tok_stats["counts"][s] = merged.get("counts", {}).get(s, {**dict.fromkeys(COUNT_KEYS, 0), "by_source": {}})
                tok_stats["encoded"][s] = merged.get("encoded", {}).get(s, {})
                tok_stats["lengths"][s] = length_stats(list_lengths(tables[s].column("input_ids")))
            if tok_cfg.pack and tables["train"].num_rows:
                from dataforge.data.pack import pack_best_fit

                packed = pack_best_fit(tables["train"], tok_cfg.max_length)
                tok_stats["packing"] = packed.stats
                tables["train"] = packed.table
            _save_tokenized(folders["tokenized"], tables, next(p.key for p in planned if p.stage.name == "tokenize"))
        template = steps.stats.get("template")
        template_info = {**template, "variants": ctx.cfg.template.variants} if template else None
        tok_settings = _tokenize_settings(ctx) if tokenized else None
        if template_info:
            atomic.write_json(run_dir / "template.json", template_info)
        content = _content_fingerprint(folders["splits"], tables)
        for row in steps.counts:
            row["dropped"] = dict(sorted(dropped.get(row["name"], {}).items()))
            stats = steps.stats.get(row["name"])
            if stats:
                row["stats"] = stats
        manifest = {
            "kind": "build", "complete": True, "engine": "ray",
            "dataforge_version": __version__, "code_version": code_version(), **identity,
            "build_key": planned[-1].key,
            "fingerprint": fingerprint(content, template_info, tok_settings),
            "seed": ctx.cfg.seed, "steps": steps.counts, "sources": sources,
            "splits": {s: int(sum(v[s] for v in by_split.values())) for s in SPLITS},
            "rejected": int(sum(rejected.values())),
            "mix": steps.stats.get("mix"), "template": template_info,
            "tokenize": {**tok_settings, **tok_stats} if tok_settings else None,
            "reused_steps": [], "step_seconds": dict(progress.seconds),
            "libraries": library_versions(("ray",)),
        }
        manifest["sources"] = {s: {**v, "rejected_by_reason": dict(sorted(v["rejected_by_reason"].items()))}
                               for s, v in sources.items()}
    return manifest


def _write_records(records: Any, splits_dir: Path, token_dir: Path | None) -> tuple[dict, dict]:
    """Stream the sorted records into the split files (and token streams); kept and per-split counts by source."""
    ordered = records.map_batches(_order, batch_format="pyarrow").sort(["_split_no", B.ROW, B.REP])
    empty = B.frame_of(records.schema().base_schema.empty_table()) if records.count() == 0 else None
    writers: dict[str, pq.ParquetWriter] = {}
    token_writers: dict[str, pa.RecordBatchStreamWriter] = {}
    kept: dict[str, int] = {}
    by_split: dict[str, dict[str, int]] = {}
    schema = None
    alpaca = {s: open(splits_dir / f"{s}.alpaca.jsonl", "w", encoding="utf-8") for s in SPLITS}
    if token_dir is not None:
        token_writers = {s: pa.ipc.new_stream(str(token_dir / f"{s}.arrow"), TOKEN_SCHEMA) for s in SPLITS}
    try:
        for batch in ordered.iter_batches(batch_format="pyarrow", batch_size=65536):
            frame = B.frame_of(batch)
            for (split,), part in frame.group_by(R.SPLIT, maintain_order=True):
                rec = part.drop([c for c in _INTERNAL if c in part.columns])
                table = rec.to_arrow()
                schema = schema or table.schema
                if split not in writers:
                    writers[split] = pq.ParquetWriter(splits_dir / f"{split}.parquet", schema)
                writers[split].write_table(table.cast(schema))
                alpaca[split].write("".join(x + "\n" for x in _alpaca_lines(rec)))
                for src, n in rec.get_column("source").value_counts().iter_rows():
                    kept[src] = kept.get(src, 0) + n
                    by_split.setdefault(src, dict.fromkeys(SPLITS, 0))[split] += n
                if token_dir is not None:
                    token_writers[split].write_table(pa.table(
                        [part.get_column(B.TOK + c).to_arrow() for c in B.TOKEN_COLUMNS]
                        + [part.get_column("source").to_arrow(), part.get_column("id").to_arrow()],
                        names=TOKEN_SCHEMA.names).cast(TOKEN_SCHEMA))
            if empty is None:
                empty = frame.clear()
        base = empty.drop([c for c in _INTERNAL if c in empty.columns]) if empty is not None else R.empty_records()
        for s in SPLITS:
            if s not in writers:
                base.write_parquet(splits_dir / f"{s}.parquet")
    finally:
        for w in (*writers.values(), *token_writers.values(), *alpaca.values()):
            w.close()
    return kept, by_split


def _write_sides(sides: list, folders: dict[str, Path]) -> tuple[dict, dict]:
    """Rejects, clusters and contamination rows as shards; rejects per (source, reason) and per stage."""
    shards = {k: _Shards(folders[k]) for k in ("rejects", "clusters", "contamination")}
    rejected: dict[tuple[str, str], int] = {}
    dropped: dict[str, dict[str, int]] = {}
    try:
        for ds in sides:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=65536):
                kinds, lines = batch.column(B.SIDE).to_pylist(), batch.column(B.JSON).to_pylist()
                for kind in ("clusters", "contamination"):
                    shards[kind].write([x for k, x in zip(kinds, lines, strict=True) if k == kind])
                rejects = [x for k, x in zip(kinds, lines, strict=True) if k == "reject"]
                shards["rejects"].write(rejects)
                for line in rejects:
                    row = json.loads(line)
                    key = (row["source"], row["reason"])
                    rejected[key] = rejected.get(key, 0) + 1
                    per = dropped.setdefault(row["stage"], {})
                    per[row["reason"]] = per.get(row["reason"], 0) + 1
    finally:
        for s in shards.values():
            s.close()
    return rejected, dropped


def _accounting(read: dict[str, int], kept: dict[str, int], rejected: dict[tuple[str, str], int],
                by_split: dict[str, dict[str, int]], repeated: dict[str, int]) -> dict[str, dict]:
    """Per-source counts; InternalError unless records read (+ the copies a mix's up-sampling made,
    `repeated`) = kept + rejected for every source."""
    sources = {}
    for src in sorted(set(read) | set(kept) | {s for s, _ in rejected}):
        reasons = {r: n for (s, r), n in rejected.items() if s == src}
        n_rej, n_kept = sum(reasons.values()), kept.get(src, 0)
        if read.get(src, 0) + repeated.get(src, 0) != n_kept + n_rej:
            raise InternalError(f"accounting broken for source '{src}': read {read.get(src, 0)} + repeated "
                                f"{repeated.get(src, 0)} != kept {n_kept} + rejected {n_rej}")
        sources[src] = {"read": read.get(src, 0), "kept": n_kept, "rejected": n_rej,
                        "rejected_by_reason": reasons, "by_split": by_split.get(src, dict.fromkeys(SPLITS, 0)),
                        **({"repeated": repeated[src]} if repeated.get(src) else {})}
    return sources


def _save_tokenized(folder: Path, tables: dict[str, pa.Table], tok_key: str) -> None:
    import datasets

    datasets.disable_progress_bars()
    dd = datasets.DatasetDict({s: datasets.Dataset(t, fingerprint=fingerprint(tok_key, s)[:16]) for s, t in tables.items()})
    dd.save_to_disk(str(folder), num_shards={s: 1 if d.num_rows == 0 else None for s, d in dd.items()})


def _content_fingerprint(splits_dir: Path, tokenized: dict[str, pa.Table]) -> str:
    """The content fingerprint of the published tables (util.fingerprint.ContentHasher), the splits
    read back in row batches through polars, as the local engine's frames reach the hash."""
    from dataforge.util.fingerprint import ContentHasher

    h = ContentHasher()
    for s in SPLITS:
        path = splits_dir / f"{s}.parquet"
        columns = [c for c in pq.read_schema(path).names if c != "origin_file"]
        batches = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=columns):
            h.add(f"splits/{s}", pl.from_arrow(batch))
            batches += 1
        if not batches:   # an empty split still counts as a table
            h.add(f"splits/{s}", pl.read_parquet(path, columns=columns))
    for s, t in tokenized.items():
        h.add(f"tokenized/{s}", t)
    return h.digest()

"""What the stream engine writes while records flow: split files, tokenized shards, side files and
the counts the manifest and the accounting are made from.

Every writer writes into a temporary path from dataforge.util.atomic, entered on one ExitStack;
nothing is renamed into the run folder until the whole build has passed the accounting check, and
an error anywhere deletes every temporary file. The published files have the layout of the local
engine's (one Parquet file and one Alpaca JSON-lines file per split, a `datasets.save_to_disk`
folder), so everything that reads a run folder reads both alike.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.util import atomic

# Rows per tokenized Arrow shard (datasets' own default aims at 500 MB; this is about that for
# records of a few hundred tokens, and bounds what one shard writer buffers: nothing).
SHARD_ROWS = 500_000


class JsonlSink:
    """A JSON-lines file written row by row (into a temporary path unless `atomic_write` is off: spool files)."""

    def __init__(self, stack: ExitStack, path: Path, *, atomic_write: bool = True):
        self.path = stack.enter_context(atomic.atomic_path(path)) if atomic_write else path
        self.f = stack.enter_context(open(self.path, "w", encoding="utf-8"))
        self.rows = 0

    def copy_from(self, other: JsonlSink) -> None:
        """Append the rows another (spool) sink has written."""
        other.f.flush()
        with open(other.path, encoding="utf-8") as f:
            shutil.copyfileobj(f, self.f)
        self.rows += other.rows

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self.f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self.rows += len(rows)

    def write_lines(self, lines: pl.Series) -> None:
        self.f.write("".join(x + "\n" for x in lines))
        self.rows += len(lines)


class ParquetSink:
    """One Parquet file written a row group per batch."""

    def __init__(self, stack: ExitStack, path: Path):
        self.tmp = stack.enter_context(atomic.atomic_path(path))
        self.writer: pq.ParquetWriter | None = None
        stack.callback(self.close)

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TokenizedSink:
    """A `datasets.save_to_disk` folder (one sub-folder per split, Arrow stream shards, state.json,
    dataset_info.json, dataset_dict.json) written shard by shard, loadable by `datasets.load_from_disk`."""

    def __init__(self, stack: ExitStack, path: Path, splits: tuple[str, ...], fingerprints: dict[str, str]):
        self.root = stack.enter_context(atomic.atomic_path(path, is_dir=True))
        self.splits, self.fingerprints = splits, fingerprints
        self.shards: dict[str, list[Path]] = {s: [] for s in splits}
        self.schema: dict[str, pa.Schema] = {}
        self.writer: dict[str, Any] = {}
        self.rows_in_shard: Counter = Counter()

    def write(self, split: str, table: pa.Table) -> None:
        if split not in self.schema:
            self.schema[split] = _dataset_schema(table.schema)
        if self.writer.get(split) is None or self.rows_in_shard[split] >= SHARD_ROWS:
            self._rotate(split)
        self.writer[split].write_table(table.replace_schema_metadata(self.schema[split].metadata))
        self.rows_in_shard[split] += table.num_rows

    def _rotate(self, split: str) -> None:
        if self.writer.get(split) is not None:
            self.writer[split].close()
        path = self.root / split / f"part-{len(self.shards[split]):05d}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.shards[split].append(path)
        self.writer[split] = pa.ipc.new_stream(str(path), self.schema[split])
        self.rows_in_shard[split] = 0

    def finish(self, empty_schema: pa.Schema) -> None:
        """Close the shards, give them datasets' names and write the metadata; a split that got no
        rows gets one empty shard (load_from_disk needs one)."""
        import datasets

        for split in self.splits:
            if split not in self.schema:
                self.schema[split] = _dataset_schema(empty_schema)
                self._rotate(split)
            self.writer[split].close()
            n = len(self.shards[split])
            files = []
            for k, shard in enumerate(self.shards[split]):
                name = f"data-{k:05d}-of-{n:05d}.arrow"
                shard.rename(shard.with_name(name))
                files.append({"filename": name})
            state = {"_data_files": files, "_fingerprint": self.fingerprints[split], "_format_columns": None,
                     "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
            (self.root / split / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
            info = datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(self.schema[split]))
            info.write_to_directory(str(self.root / split))
        (self.root / "dataset_dict.json").write_text(json.dumps({"splits": list(self.splits)}), encoding="utf-8")


def _dataset_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema with datasets' feature metadata, as save_to_disk writes it."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    return features.arrow_schema


class Tally:
    """Per-source counts the manifest and the accounting check are made from: records read, rejects
    by reason, and records kept per split."""

    def __init__(self) -> None:
        self.read: Counter = Counter()
        self.rejected: dict[str, Counter] = {}
        self.by_stage: dict[str, Counter] = {}
        self.by_stage_source: dict[tuple[str, str], Counter] = {}
        self.kept: dict[str, Counter] = {}

    def add_rejects(self, rejects: pl.DataFrame) -> None:
        for stage, src, reason, k in rejects.group_by("stage", "source", "reason").len().iter_rows():
            self.rejected.setdefault(src, Counter())[reason] += k
            self.by_stage.setdefault(stage, Counter())[reason] += k
            self.by_stage_source.setdefault((stage, src), Counter())[reason] += k

    def add_kept(self, split: str, frame: pl.DataFrame) -> None:
        for src, k in frame.get_column("source").value_counts().iter_rows():
            self.kept.setdefault(src, Counter())[split] += k

    def sources(self, splits: tuple[str, ...], repeated: dict[str, int] | None = None) -> dict[str, dict]:
        """The manifest's per-source counts; raises InternalError unless, per source, records read =
        records kept + records rejected (read counting the copies a mix's up-sampling made, `repeated`)."""
        from dataforge.errors import InternalError

        repeated = repeated or {}
        out = {}
        for src in sorted(set(self.read) | set(self.kept) | set(self.rejected)):
            kept = sum(self.kept.get(src, {}).values())
            rej = self.rejected.get(src, Counter())
            read = self.read.get(src, 0)
            if read + repeated.get(src, 0) != kept + sum(rej.values()):
                raise InternalError(f"accounting broken for source '{src}': read {read} + repeated "
                                    f"{repeated.get(src, 0)} != kept {kept} + rejected {sum(rej.values())}")
            out[src] = {"read": read, "kept": kept, "rejected": sum(rej.values()),
                        "rejected_by_reason": dict(sorted(rej.items())),
                        "by_split": {s: self.kept.get(src, {}).get(s, 0) for s in splits},
                        **({"repeated": repeated[src]} if repeated.get(src) else {})}
        return out

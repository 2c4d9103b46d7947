"""The stream engine's last pass: template, tokenize and write each split chunk by chunk.

Each chunk is templated and tokenized split by split with the stages' own functions
(`apply_template`, `tokenize_records`), so records and token ids are those of the local engine;
chunks arrive in record order, so each split's rows are in the same order too. Every published
table also goes through a `ContentHasher`, giving the dataset fingerprint without reading anything
back. Packing (`tokenize.pack`) is a best fit over the whole train split, so with packing the train
token table (not the text) is held until the end and packed then.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dataforge.data import record as R
from dataforge.data.engines.stream_output import JsonlSink, ParquetSink, TokenizedSink
from dataforge.data.pipeline import _alpaca_lines
from dataforge.data.stages import SPLITS
from dataforge.util import atomic
from dataforge.util.fingerprint import ContentHasher, fingerprint

if TYPE_CHECKING:
    from dataforge.data.engines.stream import _StreamBuild


class SplitWriter:
    def __init__(self, build: _StreamBuild, stack: ExitStack, run_dir: Path):
        self.build, self.cfg, self.stack, self.run_dir = build, build.cfg, stack, run_dir
        self.hasher = ContentHasher()
        self.rows: Counter = Counter({s: 0 for s in SPLITS})
        self.parquet = {s: ParquetSink(stack, run_dir / "splits" / f"{s}.parquet") for s in SPLITS}
        self.alpaca = {s: JsonlSink(stack, run_dir / "splits" / f"{s}.alpaca.jsonl") for s in SPLITS}
        self.template = build.ctx.template
        self.tokenizer = build.ctx.tokenizer if self.template.needs_tokenizer or "tokenize" in build.stages else None
        self.template_info = {"name": self.template.name, "sha256": self.template.sha256,
                              "think": self.cfg.template.think.value, "variants": self.cfg.template.variants}
        self.tokenize = "tokenize" in build.stages
        self.tokenize_stats: dict = {}
        empty = self._templated(R.empty_records().with_columns(
            pl.lit(None, pl.Utf8).alias(R.CONTENT_HASH), pl.lit(None, pl.Utf8).alias(R.CLUSTER_ID),
            pl.lit(None, pl.Utf8).alias(R.SPLIT)))
        self.empty = empty
        if self.tokenize:
            key = build.stages["tokenize"].key
            self.tokenized = TokenizedSink(stack, run_dir / "tokenized", SPLITS,
                                           {s: fingerprint(key, s)[:16] for s in SPLITS})
            base = self._tokenize(empty)
            self.empty_table = base.table
            self.counts = {s: base.counts for s in SPLITS}
            self.routes = {s: dict(base.routes) for s in SPLITS}
            self.lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
            self.train_tables: list = []

    def _templated(self, frame: pl.DataFrame) -> pl.DataFrame:
        from dataforge.data.turns import render_records

        return render_records(frame, self.template, self.tokenizer if self.template.needs_tokenizer else None,
                              seed=self.cfg.seed, variants=self.cfg.template.variants, think=self.cfg.template.think,
                              train_turns=self.cfg.tokenize.train_turns)

    def _tokenize(self, part: pl.DataFrame):
        from dataforge.data.tokenize import tokenize_records

        return tokenize_records(part, self.build.ctx.tokenizer, self.cfg.tokenize, template=self.template,
                                think=self.cfg.template.think)

    def write(self, frame: pl.DataFrame) -> None:
        """Template, tokenize and write one chunk (all splits mixed, in record order)."""
        from dataforge.data.engines.stream import _merge

        frame = self.build._timed("template", self._templated, frame)
        self.build._count("template", frame.height, frame.height)
        labels = frame.get_column(R.SPLIT)
        for split in SPLITS:
            part = frame.filter(labels == split)
            if part.height == 0:
                continue
            if self.tokenize:
                t0 = time.perf_counter()
                result = self._tokenize(part)
                table = result.table
                if result.rejected.height:
                    part = part.filter(pl.col("id").is_in(table.column("id").to_pylist()))
                    self.build._rejects("tokenize", result.rejected)
                self.build._count("tokenize", part.height + result.rejected.height, part.height)
                self.counts[split] = _merge(self.counts[split], result.counts)
                self.routes[split] = _merge(self.routes[split], result.routes)
                self.lengths[split].append(result.lengths)
                if self.cfg.tokenize.pack and split == "train":
                    self.train_tables.append(table)
                else:
                    self.tokenized.write(split, table)
                    self.hasher.add(f"tokenized/{split}", table)
                self.build.seconds["tokenize"] += time.perf_counter() - t0
            self._write_split(split, part)

    def _write_split(self, split: str, part: pl.DataFrame) -> None:
        self.parquet[split].write(part)
        self.alpaca[split].write_lines(_alpaca_lines(part))
        self.hasher.add(f"splits/{split}", part.drop("origin_file"))
        self.build.tally.add_kept(split, part)
        self.rows[split] += part.height

    def finish(self) -> None:
        """Close the splits (an empty split still gets its empty files), pack train if asked, and write
        the side files; nothing is renamed into the run folder until the caller's stack closes."""
        for split in SPLITS:
            if self.rows[split] == 0:
                self.parquet[split].write(self.empty)
                self.hasher.add(f"splits/{split}", self.empty.drop("origin_file"))
        if self.tokenize:
            self._finish_tokenized()
        build = self.build
        rejects = JsonlSink(self.stack, self.run_dir / "rejects.jsonl")
        for name in build.stages:
            rejects.copy_from(build.side[f"rejects-{name}"])
        clusters = JsonlSink(self.stack, self.run_dir / "clusters.jsonl")
        clusters.copy_from(build.side["clusters-exact"])
        clusters.copy_from(build.side["clusters-near"])
        JsonlSink(self.stack, self.run_dir / "contamination.jsonl").copy_from(build.side["contamination"])
        tmp = self.stack.enter_context(atomic.atomic_path(self.run_dir / "template.json"))
        atomic.write_json(tmp, self.template_info)

    def _finish_tokenized(self) -> None:
        import pyarrow as pa

        from dataforge.data.tokenize import length_stats

        stats: dict = {"counts": self.counts, "lengths": {}, "encoded": self.routes}
        for split in SPLITS:
            lengths = self.lengths[split]
            stats["lengths"][split] = length_stats(np.concatenate(lengths) if lengths else np.zeros(0, np.int64))
        if self.cfg.tokenize.pack:
            train = pa.concat_tables(self.train_tables) if self.train_tables else self.empty_table
            if train.num_rows:
                from dataforge.data.pack import pack_best_fit

                packed = pack_best_fit(train, self.cfg.tokenize.max_length)
                stats["packing"] = packed.stats
                train = packed.table
            self.train_tables = []
            if train.num_rows:
                self.tokenized.write("train", train)
            self.hasher.add("tokenized/train", train)
        for split in SPLITS:
            if split not in self.tokenized.schema and not (self.cfg.tokenize.pack and split == "train"):
                self.hasher.add(f"tokenized/{split}", self.empty_table)
        self.tokenized.finish(self.empty_table.schema)
        self.tokenize_stats = stats

"""The collect stage: every input of a build, read into one frame of canonical records.

Guarantees, per source: every physical record read is either kept or rejected with a reason, so
`stats["read"][source] == kept + rejected`. With `on_error=fail` the first bad record raises
InputError naming the file, the line (or row) and the field.

What counts as one record read: a line (JSON lines), a data row (CSV), an item (JSON array), a row
(Parquet, Arrow, hub). Whole-file failures (an unparseable JSON document, a corrupt Parquet file, the
unparseable tail of a JSON array) count as one record, rejected once.

An input with no records at all (an empty file, a CSV with only a header, `[]`) is almost always a
wrong path or a failed export, so it is never silent: with `fail` it raises InputError; with `skip` it
becomes one `empty_file` reject at origin 0 (counted as one record read) and the build goes on with
the other inputs.

Problems that no skipping can fix raise InputError either way: a path that does not exist, an
unsupported file type, a JSON object with several candidate record lists, duplicate CSV header names,
a missing split, an unreachable hub dataset. A wrong `columns` mapping is a ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from dataforge.config.build import InputFormat, InputSpec, OnError
from dataforge.data.formats import (
    FieldNames,
    RecordProblem,
    canonical_from_table,
    column_problems,
    fast_fields,
    to_canonical,
)
from dataforge.data.io.raw import Problem, RawInput, RawPart, RawRow, problem_error, record_error
from dataforge.data.io.readers import read_input
from dataforge.data.record import RECORD_SCHEMA, REJECT_SCHEMA, empty_records, empty_rejects
from dataforge.data.stage import RECORD_JSON_CAP, StageResult
from dataforge.errors import ConfigError

STAGE = "collect"
TEXT_COLUMNS = ("system", "history", "instruction", "input", "output")


def collect(inputs: list[InputSpec], on_error: OnError, *, base_dir: Path | None = None) -> StageResult:
    """Read every input (relative paths resolve against `base_dir` when given) into RECORD_SCHEMA rows.

    `stats["read"]` maps each source to the records read from it; `stats["inputs"]` has one entry per
    input with its file, its counts, and how many records took the vectorized route.
    """
    problems = [f"inputs[{i}].{p}" for i, spec in enumerate(inputs) for p in column_problems(spec)]
    if problems:
        raise ConfigError(problems)
    kept, rejected, read, per_input = [], [], {}, []
    for index, spec in enumerate(inputs):
        records, rejects, stats = _collect_input(index, spec, on_error, base_dir)
        kept.append(records)
        rejected.append(rejects)
        read[spec.source] = read.get(spec.source, 0) + stats["read"]
        per_input.append(stats)
    return StageResult(
        kept=pl.concat(kept) if kept else empty_records(),
        rejected=pl.concat(rejected) if rejected else empty_rejects(),
        stats={"read": read, "inputs": per_input},
    )


def _collect_input(index: int, spec: InputSpec, on_error: OnError,
                   base_dir: Path | None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    names = FieldNames(spec.columns)
    text_fields, guard_fields = fast_fields(spec.format, names)
    raw = read_input(spec.path, base_dir=base_dir, split=spec.split, subset=spec.subset, limit=spec.limit,
                     text_fields=text_fields, guard_fields=guard_fields)
    fmt = InputFormat(raw.declared_format) if spec.format == InputFormat.auto and raw.declared_format else spec.format
    out = _Collected(raw, spec.source, f"{spec.source}:{index}:", on_error)
    parts, vectorized = [empty_records()], 0
    if raw.count == 0:
        out.reject(RawRow(0, None, Problem("empty_file", raw.empty_message, whole_file=True), ""))
    for part in raw.parts:
        canon = canonical_from_table(part.table, fmt, names) if part.table is not None else None
        if canon is not None:
            parts.append(out.from_table(canon, part))
            vectorized += part.count
        else:
            parts.append(out.from_rows(part.records(), fmt, names))
    records = pl.concat(parts)
    rejects = pl.DataFrame(out.rejects, schema=REJECT_SCHEMA) if out.rejects else empty_rejects()
    stats = {"path": raw.file, "source": spec.source, "read": max(raw.count, 1), "kept": records.height,
             "rejected": rejects.height, "vectorized": vectorized, **({"encoding": raw.encoding} if raw.encoding else {})}
    unread = sum(r.problem.unread_bytes for part in raw.parts for r in part.rows if r.problem is not None)
    if unread:
        stats["unread_bytes"] = unread  # spans no record could be parsed from; the summary says so
    return records, rejects, stats


class _Collected:
    """Accumulates one input's kept records and rejects; raises at the first problem under `fail`."""

    def __init__(self, raw: RawInput, source: str, id_prefix: str, on_error: OnError):
        self.raw, self.source, self.id_prefix, self.on_error = raw, source, id_prefix, on_error
        self.rejects: list[dict] = []

    def reject(self, row: RawRow, problem: RecordProblem | None = None) -> None:
        """Record why `row` is dropped (a reader's `row.problem`, or a format `problem`), or raise under fail."""
        if problem is None:
            problem, err = row.problem, problem_error(self.raw, row)
        else:
            err = record_error(self.raw.file, self.raw.unit, row.origin, problem.message, problem.field)
        if self.on_error == OnError.fail:
            raise err
        record = row.raw if row.raw is not None else _record_json(row.value)
        self.rejects.append({
            "stage": STAGE, "reason": problem.reason, "detail": str(err), "id": f"{self.id_prefix}{row.origin}",
            "source": self.source, "origin_file": self.raw.file, "origin_line": row.origin, "record": record,
        })

    @property
    def missing_text(self) -> str:
        """How an absent value reads in this source: a CSV shows it as an empty or NaN cell."""
        return "is empty (or NaN)" if self.raw.kind in ("csv", "tsv") else "is missing or null"

    def from_rows(self, rows: Iterable[RawRow], fmt: InputFormat, names: FieldNames) -> pl.DataFrame:
        """The per-record route: each record judged and converted on its own."""
        missing = self.missing_text
        origins: list[int] = []
        columns: list[list] = [[] for _ in TEXT_COLUMNS]
        for row in rows:
            if row.problem is not None:
                self.reject(row)
                continue
            try:
                fields = to_canonical(row.value, fmt, names, missing)
            except RecordProblem as problem:
                self.reject(row, problem)
                continue
            origins.append(row.origin)
            for column, value in zip(columns, fields, strict=True):
                column.append(value)
        texts = dict(zip(TEXT_COLUMNS, columns, strict=True))
        return pl.DataFrame({
            "id": [f"{self.id_prefix}{o}" for o in origins],
            "source": [self.source] * len(origins),
            "origin_file": [self.raw.file] * len(origins),
            "origin_line": origins,
            **{c: texts[c] for c in ("system", "instruction", "input", "output")},
            "history": _history_column(texts["history"]),
        }, schema=RECORD_SCHEMA)

    def from_table(self, canon: pl.DataFrame, part: RawPart) -> pl.DataFrame:
        """The vectorized route: `canon` is `canonical_from_table(part.table)`."""
        missing = canon["missing_field"]
        bad = missing.is_not_null()
        if bad.any():
            origins = part.origins.filter(bad).to_list()
            fields = missing.filter(bad).to_list()
            values = part.stored_records(bad)
            for origin, field, value in zip(origins, fields, values, strict=True):
                self.reject(RawRow(origin, value), RecordProblem("missing_field", self.missing_text, field))
        good = canon.with_columns(part.origins.alias("origin_line")).filter(~bad)
        return good.select(
            pl.concat_str([pl.lit(self.id_prefix), pl.col("origin_line").cast(pl.String)]).alias("id"),
            pl.lit(self.source, dtype=pl.String).alias("source"),
            pl.lit(self.raw.file, dtype=pl.String).alias("origin_file"),
            pl.col("origin_line").cast(pl.Int64),
            *TEXT_COLUMNS,
        ).cast(RECORD_SCHEMA)


def _history_column(histories: list[list[dict]]) -> pl.Series:
    """Build the List(Struct) column through Arrow buffers: polars' constructor from nested Python
    objects costs ~100 us a row, which made the per-record route 5x slower than parsing."""
    import pyarrow as pa

    offsets, roles, contents = [0], [], []
    for turns in histories:
        for turn in turns:
            roles.append(turn["role"])
            contents.append(turn["content"])
        offsets.append(len(roles))
    turns = pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())],
                                       names=["role", "content"])
    array = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), turns)
    return pl.Series("history", array).cast(RECORD_SCHEMA["history"])


def _record_json(value: dict | None) -> str:
    """The record for the rejects file, capped; lone surrogates are escaped so the text stays valid UTF-8."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:RECORD_JSON_CAP]

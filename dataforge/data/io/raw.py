"""The records a reader hands back, and the errors that point into them.

A reader returns a `RawInput`: the input's physical records in order, split into `RawPart`s, each
read by one route (a typed table, or one `RawRow` per record). A record that could not be read
carries a `Problem`; nothing is dropped before the collect stage decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from dataforge.errors import InputError

# Raw tabs and newlines inside strings are common in the wild; the clean stage judges control characters.
JSON_DECODER = json.JSONDecoder(strict=False)


@dataclass(frozen=True)
class Problem:
    """Why one physical record could not be used. `reason` is machine-readable, `message` is for people."""

    reason: str
    message: str
    field: str | None = None
    whole_file: bool = False         # the file as a whole is unusable (its origin is then not a position)
    unread_bytes: int = 0            # bytes that could not be parsed into any record (a broken span of a document)


@dataclass
class RawRow:
    origin: int                      # 1-based line, or 0-based row index (see `RawInput.unit`)
    value: dict | None               # the parsed record; None when `problem` is set
    problem: Problem | None = None
    raw: str | None = None           # the raw text, kept only for records that could not be parsed


@dataclass
class RawPart:
    """Consecutive records read by one route: a typed `table` (fast) or `rows` (one by one)."""

    table: pl.DataFrame | None = None
    origins: pl.Series | None = None       # the origin of each table row
    rows: list[RawRow] = field(default_factory=list)
    lines: bytes | None = None             # JSON lines behind `table`, one per row: the table holds only the fields read

    @classmethod
    def of_table(cls, table: pl.DataFrame, first_origin: int, lines: bytes | None = None) -> RawPart:
        origins = pl.int_range(first_origin, first_origin + table.height, dtype=pl.Int64, eager=True)
        return cls(table=table, origins=origins, lines=lines)

    def stored_records(self, mask: pl.Series) -> list[dict]:
        """The table rows at `mask` as they were stored, with every field, for the rejects file."""
        if self.lines is None:
            return self.table.filter(mask).to_dicts()
        import numpy as np

        ends = np.flatnonzero(np.frombuffer(self.lines, dtype=np.uint8) == ord("\n"))
        starts = np.concatenate(([0], ends + 1))
        ends = np.append(ends, len(self.lines))
        return [JSON_DECODER.decode(self.lines[starts[i]:ends[i]].decode("utf-8")) for i in mask.arg_true().to_list()]

    @property
    def count(self) -> int:
        return self.table.height if self.table is not None else len(self.rows)

    def records(self) -> Iterator[RawRow]:
        """Every record as a `RawRow`, whichever route read it."""
        if self.table is None:
            yield from self.rows
            return
        for origin, value in zip(self.origins.to_list(), self.table.iter_rows(named=True), strict=True):
            yield RawRow(origin, value)


@dataclass
class RawInput:
    """What a reader hands back: the input's records in order, as one or more parts."""

    file: str
    kind: str                        # jsonl | json | csv | tsv | parquet | arrow | hub
    unit: str                        # "line" (1-based) or "row" (0-based)
    parts: list[RawPart] = field(default_factory=list)
    declared_format: str | None = None    # a self-instruct folder declares Alpaca
    empty_message: str = "holds no records"
    encoding: str | None = None           # what a text file was stored in (utf-8, utf-16-le, ...); None for tables

    @property
    def count(self) -> int:
        return sum(part.count for part in self.parts)

    def records(self) -> Iterator[RawRow]:
        for part in self.parts:
            yield from part.records()


def record_error(file: str, unit: str, origin: int, message: str, field: str | None = None) -> InputError:
    """The error for one record. Row-indexed sources say so, since `file:3` reads like a text line."""
    if unit == "row":
        message = f"{message} (record #{origin}, counting from 0)"
    return InputError(message, file=file, line=origin, field=field)


def problem_error(raw: RawInput, row: RawRow) -> InputError:
    """The error for a record the reader could not parse (or for the whole file)."""
    if row.problem.whole_file:
        return InputError(row.problem.message, file=raw.file)
    return record_error(raw.file, raw.unit, row.origin, row.problem.message, row.problem.field)


def json_type(value: object) -> str:
    """A value's JSON type name, for messages that explain a type mismatch."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

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

Formats and fields: see dataforge.data.formats. A self-instruct seed counts one record read per
instance (the reason is in that module). Every field a record has and its format does not read is
counted per input and per source (`stats["ignored_fields"]`, printed in the build summary); a field
that changes what a record means (a KTO label, a preference pair, a score) raises InputError
naming the file, the line and the field, unless the input lists it in `ignore_fields`. A field listed
there is never read, even one the format could use (`tools`, `system`), and is counted as ignored.

Preference inputs (a preference `format`, task: preference) are read record by record into pairs by
dataforge.data.preference; there the unit counted is the pair (a ranked record with K completions is
as many pairs read as its rule draws), and `stats["records"]` gives the source records behind them.

A source that keeps no record at all is a warning in `stats["warnings"]` (shown loudly by the build
summary); under `fail` the first rejected record has already stopped the build.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl

from dataforge.config.build import PREFERENCE_FORMATS, InputFormat, InputSpec, OnError, PreferenceConfig
from dataforge.data.conversations import RecordProblem
from dataforge.data.formats import (
    MEANING_FIELDS,
    FieldNames,
    canonical_from_table,
    column_problems,
    fast_fields,
    meaning_message,
    record_format,
    to_canonical,
    unused_fields,
)
from dataforge.data.io.raw import Problem, RawInput, RawPart, RawRow, problem_error, record_error
from dataforge.data.io.readers import jsonl_blocks, read_input
from dataforge.data.preference import NO_PREFERENCE, to_pairs, used_fields
from dataforge.data.record import (
    KTO_LABEL,
    PREFERENCE_SCHEMA,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    REJECTED,
    Canonical,
    empty_pairs,
    empty_records,
    empty_rejects,
)
from dataforge.data.stage import RECORD_JSON_CAP, StageResult
from dataforge.errors import ConfigError

STAGE = "collect"


def collect(inputs: list[InputSpec], on_error: OnError, *, base_dir: Path | None = None,
            preference: PreferenceConfig | None = None) -> StageResult:
    """Read every input (relative paths resolve against `base_dir` when given) into RECORD_SCHEMA rows.

    `stats["read"]` maps each source to the records read from it; `stats["inputs"]` has one entry per
    input with its file, its counts, its ignored fields, and how many records took the vectorized
    route; `stats["ignored_fields"]` maps each source to {field: records}; `stats["warnings"]` names
    the sources that kept nothing. Preference inputs (dataforge.data.preference, rules from
    `preference`) count pairs, and add `stats["records"]`: the source records behind them.
    """
    problems = [f"inputs[{i}].{p}" for i, spec in enumerate(inputs) for p in column_problems(spec)]
    if problems:
        raise ConfigError(problems)
    kept, rejected, read, per_input = [], [], {}, []
    ignored: dict[str, Counter] = {}
    records_read: dict[str, int] = {}
    for index, spec in enumerate(inputs):
        records, rejects, stats = collect_input(index, spec, on_error, base_dir, preference or PreferenceConfig())
        kept.append(records)
        rejected.append(rejects)
        read[spec.source] = read.get(spec.source, 0) + stats["read"]
        if "records" in stats:
            records_read[spec.source] = records_read.get(spec.source, 0) + stats["records"]
        ignored.setdefault(spec.source, Counter()).update(stats["ignored_fields"])
        per_input.append(stats)
    kept_frame = pl.concat(kept) if kept else empty_records()
    rejected_frame = pl.concat(rejected) if rejected else empty_rejects()
    return StageResult(
        kept=kept_frame,
        rejected=rejected_frame,
        stats={"read": read, "inputs": per_input,
               "ignored_fields": {s: dict(sorted(c.items())) for s, c in ignored.items() if c},
               "warnings": _empty_sources(read, kept_frame, rejected_frame),
               **({"records": records_read} if records_read else {})},
    )


def _empty_sources(read: dict[str, int], kept: pl.DataFrame, rejected: pl.DataFrame) -> list[str]:
    """One warning per source that kept no record: a wrong format or field mapping, almost always."""
    warnings = []
    for source, n in read.items():
        if kept.filter(pl.col("source") == source).height:
            continue
        reasons = rejected.filter(pl.col("source") == source).group_by("reason").len().sort("reason").rows()
        warnings.append(f"source '{source}' kept no record: all {n} read were rejected "
                        f"({', '.join(f'{r} {k}' for r, k in reasons)}); check its format and field names")
    return warnings


def collect_input(index: int, spec: InputSpec, on_error: OnError, base_dir: Path | None,
                  preference: PreferenceConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    names = FieldNames(spec.columns, spec.roles)
    pairs = spec.format in PREFERENCE_FORMATS
    text_fields, guard_fields = ([], []) if pairs else fast_fields(spec.format, names)
    raw = read_input(spec.path, base_dir=base_dir, split=spec.split, subset=spec.subset, limit=spec.limit,
                     text_fields=text_fields, guard_fields=guard_fields)
    records, rejects, stats = _collect_raw(index, spec, on_error, raw, preference)
    if raw.count == 0:
        rejects = pl.concat([_empty_reject(index, spec, on_error, raw), rejects])
        stats["rejected"] += 1
    stats["read"] = max(raw.count, 1) + stats["read"] - raw.count
    return records, rejects, stats


def collect_blocks(index: int, spec: InputSpec, on_error: OnError,
                   block_bytes: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame, dict]]:
    """One input as consecutive (records, rejects, stats) blocks, for the stream engine: the same
    records, ids, origins and rejects as `collect_input`, in the same order. A large UTF-8
    JSON-lines file is read `block_bytes` at a time; any other input is read whole and yields once.
    The last block's stats are the input's totals."""
    names = FieldNames(spec.columns, spec.roles)
    text_fields, guard_fields = fast_fields(spec.format, names)
    blocks = None if spec.limit is not None else jsonl_blocks(Path(spec.path), block_bytes, text_fields, guard_fields)
    if blocks is None:
        yield collect_input(index, spec, on_error, None, PreferenceConfig())
        return
    total: dict = {}
    empty = "file is empty"
    for raw in blocks:
        records, rejects, stats = _collect_raw(index, spec, on_error, raw)
        empty = empty if raw.empty_message == "file is empty" else "holds no records"
        total = _add_stats(total, stats)
        yield records, rejects, total
    if total.get("read", 0) == 0:
        raw = RawInput(spec.path, "jsonl", "line", empty_message=empty)
        total = {**total, "read": 1, "rejected": total.get("rejected", 0) + 1}
        yield empty_records(), _empty_reject(index, spec, on_error, raw), total


def _add_stats(total: dict, stats: dict) -> dict:
    """Per-input stats of two consecutive blocks of one input, summed."""
    if not total:
        return stats
    out = {**total}
    for key in ("read", "kept", "rejected", "vectorized", "unread_bytes"):
        if key in stats or key in total:
            out[key] = total.get(key, 0) + stats.get(key, 0)
    ignored = Counter(total["ignored_fields"])
    ignored.update(stats["ignored_fields"])
    out["ignored_fields"] = dict(sorted(ignored.items()))
    return out


def _empty_reject(index: int, spec: InputSpec, on_error: OnError, raw: RawInput) -> pl.DataFrame:
    out = _Collected(raw, spec, f"{spec.source}:{index}:", on_error)
    out.reject(RawRow(0, None, Problem("empty_file", raw.empty_message, whole_file=True), ""))
    return pl.DataFrame(out.rejects, schema=REJECT_SCHEMA)


def _collect_raw(index: int, spec: InputSpec, on_error: OnError, raw: RawInput,
                 preference: PreferenceConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The records and rejects of one read input (or one block of it); `stats["read"]` counts its
    records, without the one an empty input counts (the callers add it)."""
    names = FieldNames(spec.columns, spec.roles)
    fmt = InputFormat(raw.declared_format) if spec.format == InputFormat.auto and raw.declared_format else spec.format
    out = _Collected(raw, spec, f"{spec.source}:{index}:", on_error)
    pairs = spec.format in PREFERENCE_FORMATS
    parts, vectorized = [empty_pairs() if pairs else empty_records()], 0
    for part in raw.parts if pairs else ():
        parts.append(out.from_pairs(part.records(), fmt, names, spec.columns, preference or PreferenceConfig()))
    for part in raw.parts if not pairs else ():
        table = out.strip_table(part) if part.table is not None else None
        route = canonical_from_table(table, fmt, names) if table is not None else None
        if route is not None:
            canon, read_as = route
            out.count_table_fields(table, part.origins, names.used(read_as))
            parts.append(out.from_table(canon, part))
            vectorized += part.count
        else:
            parts.append(out.from_rows(part.records(), fmt, names))
    records = pl.concat(parts)
    rejects = pl.DataFrame(out.rejects, schema=REJECT_SCHEMA) if out.rejects else empty_rejects()
    stats = {"path": raw.file, "source": spec.source, "read": raw.count + out.extra_read,
             "kept": records.height, "rejected": rejects.height, "vectorized": vectorized,
             "ignored_fields": dict(sorted(out.ignored.items()))}
    if pairs:
        stats["records"] = max(raw.count, 1)
    if raw.encoding:
        stats["encoding"] = raw.encoding
    unread = sum(r.problem.unread_bytes for part in raw.parts for r in part.rows if r.problem is not None)
    if unread:
        stats["unread_bytes"] = unread  # spans no record could be parsed from; the summary says so
    return records, rejects, stats


class _Collected:
    """Accumulates one input's kept records, rejects and ignored fields; raises at the first problem under `fail`."""

    def __init__(self, raw: RawInput, spec: InputSpec, id_prefix: str, on_error: OnError):
        self.raw, self.source, self.id_prefix, self.on_error = raw, spec.source, id_prefix, on_error
        self.allowed = set(spec.ignore_fields)
        self.rejects: list[dict] = []
        self.ignored: Counter = Counter()
        self.extra_read = 0     # records read beyond one per physical record (self-instruct instances)

    def reject(self, row: RawRow, problem: RecordProblem | None = None, suffix: str = "") -> None:
        """Record why `row` is dropped (a reader's `row.problem`, or a format `problem`), or raise under
        fail, unless the problem is a rule of the data rather than a fault (a tie, an unrated A/B row)."""
        if problem is None:
            problem, err = row.problem, problem_error(self.raw, row)
        else:
            err = record_error(self.raw.file, self.raw.unit, row.origin, problem.message, problem.field)
        if self.on_error == OnError.fail and problem.reason not in NO_PREFERENCE:
            raise err
        record = row.raw if row.raw is not None else _record_json(row.value)
        self.rejects.append({
            "stage": STAGE, "reason": problem.reason, "detail": str(err),
            "id": f"{self.id_prefix}{row.origin}{suffix}", "source": self.source, "origin_file": self.raw.file,
            "origin_line": row.origin, "record": record,
        })

    def ignore(self, field: str, count: int, origin: int) -> None:
        """Count `count` records with an unused `field`; refuse a field that changes the records' meaning."""
        if field in MEANING_FIELDS and field not in self.allowed:
            raise record_error(self.raw.file, self.raw.unit, origin, meaning_message(field), field)
        self.ignored[field] += count

    def count_table_fields(self, table: pl.DataFrame, origins: pl.Series, used: set[str]) -> None:
        for name in table.columns:
            if name in used:
                continue
            present = table[name].is_not_null()
            if present.any():
                self.ignore(name, int(present.sum()), origins.filter(present)[0])

    def strip_table(self, part: RawPart) -> pl.DataFrame:
        """The part's table without the fields listed in `ignore_fields`, which are counted as ignored."""
        dropped = [name for name in part.table.columns if name in self.allowed]
        for name in dropped:
            self.ignored[name] += part.table.height - part.table[name].null_count()
        return part.table.drop(dropped)

    def strip_record(self, value: dict) -> dict:
        """The record without the fields listed in `ignore_fields`, which are counted as ignored."""
        dropped = [name for name, v in value.items() if name in self.allowed]
        for name in dropped:
            self.ignored[name] += value[name] is not None
        return {k: v for k, v in value.items() if k not in self.allowed} if dropped else value

    @property
    def missing_text(self) -> str:
        """How an absent value reads in this source: a CSV shows it as an empty or NaN cell."""
        return "is empty (or NaN)" if self.raw.kind in ("csv", "tsv") else "is missing or null"

    def from_rows(self, rows: Iterable[RawRow], fmt: InputFormat, names: FieldNames) -> pl.DataFrame:
        """The per-record route: each record judged and converted on its own."""
        missing = self.missing_text
        ids: list[str] = []
        origins: list[int] = []
        kept: list[Canonical] = []
        for row in rows:
            if row.problem is not None:
                self.reject(row)
                continue
            value = self.strip_record(row.value)
            read_as = record_format(value, fmt, names)
            for name in unused_fields(value, read_as, names):
                self.ignore(name, 1, row.origin)
            nested: set[str] = set()
            try:
                results = to_canonical(value, read_as, names, missing, nested)
            except RecordProblem as problem:
                self.reject(row, problem)
                continue
            finally:
                for name in nested:
                    self.ignore(name, 1, row.origin)
            self.extra_read += len(results) - 1
            for k, result in enumerate(results):
                suffix = f"#{k}" if read_as == InputFormat.self_instruct else ""
                if isinstance(result, RecordProblem):
                    self.reject(row, result, suffix)
                    continue
                ids.append(f"{self.id_prefix}{row.origin}{suffix}")
                origins.append(row.origin)
                kept.append(result)
        return pl.DataFrame({
            "id": ids,
            "source": [self.source] * len(ids),
            "origin_file": [self.raw.file] * len(ids),
            "origin_line": origins,
            **{c: [getattr(r, c) for r in kept] for c in ("system", "instruction", "input", "output", "tools", "kind")},
            "history": _turns_column([r.history for r in kept]),
            "tool_turns": _turns_column([r.tool_turns for r in kept]),
        }, schema=RECORD_SCHEMA)

    def from_pairs(self, rows: Iterable[RawRow], fmt: InputFormat, names: FieldNames, columns: dict[str, str],
                   cfg: PreferenceConfig) -> pl.DataFrame:
        """The preference route: each record becomes its pairs (dataforge.data.preference), each pair
        kept or rejected on its own with the id `<prefix><origin><suffix>`."""
        used = used_fields(fmt, names, columns)
        ids: list[str] = []
        origins: list[int] = []
        kept: list[Canonical] = []
        rejected: list[str] = []
        labels: list[bool | None] = []
        for row in rows:
            if row.problem is not None:
                self.reject(row)
                continue
            value = self.strip_record(row.value)
            for name, v in value.items():
                if v is not None and name not in used:
                    self.ignore(name, 1, row.origin)
            try:
                results = to_pairs(value, fmt, names, columns, cfg, self.missing_text)
            except RecordProblem as problem:
                self.reject(row, problem)
                continue
            self.extra_read += len(results) - 1
            for result in results:
                if isinstance(result, RecordProblem):
                    self.reject(row, result, getattr(result, "suffix", ""))
                    continue
                ids.append(f"{self.id_prefix}{row.origin}{result.suffix}")
                origins.append(row.origin)
                kept.append(result.record)
                rejected.append(result.rejected)
                labels.append(result.kto_label)
        return pl.DataFrame({
            "id": ids,
            "source": [self.source] * len(ids),
            "origin_file": [self.raw.file] * len(ids),
            "origin_line": origins,
            **{c: [getattr(r, c) for r in kept] for c in ("system", "instruction", "input", "output", "tools", "kind")},
            "history": _turns_column([r.history for r in kept]),
            "tool_turns": _turns_column([r.tool_turns for r in kept]),
            REJECTED: rejected,
            KTO_LABEL: pl.Series(labels, dtype=pl.Boolean),
        }, schema=PREFERENCE_SCHEMA)

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
        return good.with_columns(
            pl.concat_str([pl.lit(self.id_prefix), pl.col("origin_line").cast(pl.String)]).alias("id"),
            pl.lit(self.source, dtype=pl.String).alias("source"),
            pl.lit(self.raw.file, dtype=pl.String).alias("origin_file"),
            pl.col("origin_line").cast(pl.Int64),
            pl.lit("").alias("tools"),
            pl.lit([], dtype=RECORD_SCHEMA["tool_turns"]).alias("tool_turns"),
        ).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)


def _turns_column(conversations: list[list[dict]]) -> pl.Series:
    """Build a List(Struct) turns column through Arrow buffers: polars' constructor from nested Python
    objects costs ~100 us a row, which made the per-record route 5x slower than parsing."""
    import pyarrow as pa

    offsets, roles, contents = [0], [], []
    for turns in conversations:
        for turn in turns:
            roles.append(turn["role"])
            contents.append(turn["content"])
        offsets.append(len(roles))
    turns = pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())],
                                       names=["role", "content"])
    array = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), turns)
    return pl.Series(array).cast(RECORD_SCHEMA["history"])


def _record_json(value: dict | None) -> str:
    """The record for the rejects file, capped; lone surrogates are escaped so the text stays valid UTF-8."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:RECORD_JSON_CAP]

"""Read any supported input into raw records, each tagged with where it came from.

Readers know bytes and containers (JSON lines, JSON documents, CSV/TSV, Parquet, `save_to_disk`
folders, self-instruct folders, hub datasets); they know nothing about record formats, which
`dataforge.data.formats` turns into the canonical record.

Every physical record (a line, a CSV row, an array item, a table row) comes back exactly once:
either parsed, or as a `Problem` that says why it could not be read. Nothing is dropped here.

Two routes, one result:
- the fast route hands back a typed table (pyarrow's JSON/CSV readers, Parquet, Arrow) when the
  bytes parse cleanly, every requested text field is a string or null, and rows map one-to-one onto
  lines;
- otherwise records are read one by one, so each problem is pinned to its line.
The fast route is an optimization only: anything it cannot vouch for goes the slow way. A JSON-lines
file that fails as a whole is retried in chunks of about 4 MiB, so a few bad lines in a large file
slow down only the chunks that hold them.

Text files are decoded first (`encoding`: UTF-16 and UTF-32 become UTF-8). JSON documents are read
by `json_doc`, which recovers the records after a fault. CSV is parsed strictly, so one unclosed
quote costs its own line, not every row after it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from dataforge.data.io.encoding import to_utf8
from dataforge.data.io.json_doc import read_json_document
from dataforge.data.io.raw import (
    JSON_DECODER,
    Problem,
    RawInput,
    RawPart,
    RawRow,
    json_type,
    problem_error,
)
from dataforge.data.io.text import read_txt
from dataforge.data.stage import RECORD_JSON_CAP
from dataforge.errors import InputError
from dataforge.paths import is_hub_id

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".txt",)
SUPPORTED = (*JSONL_SUFFIXES, *JSON_SUFFIXES, *CSV_SUFFIXES, *PARQUET_SUFFIXES, *TEXT_SUFFIXES)
BOM = b"\xef\xbb\xbf"
# CSV cells that mean "no value": an empty cell (how pandas writes NaN) and a literal NaN.
CSV_MISSING = ("", "NaN", "nan")
_FAST_JSON_BLOCK = 64 << 20  # pyarrow block size; a record longer than this just takes the slow route
_RETRY_CHUNK = 4 << 20       # chunk size when a JSON-lines file is retried piece by piece


def read_input(path: str | os.PathLike, *, base_dir: Path | None = None, split: str = "train",
               subset: str | None = None, limit: int | None = None, text_fields: Sequence[str] = (),
               guard_fields: Sequence[str] = ()) -> RawInput:
    """Read one input. `text_fields` are the columns the fast JSON-lines route reads as strings (none:
    no fast route); a record with a non-null `guard_fields` value (e.g. `messages` in a file read as
    Alpaca) sends the file down the slow route so the record is judged by its own fields.

    Raises InputError for what no skipping can fix: a missing path, an unsupported suffix, an
    ambiguous container, an unreachable hub dataset.
    """
    text = str(path)
    local = Path(text).expanduser()
    if base_dir is not None and not local.is_absolute():
        local = Path(base_dir) / local
    if local.is_dir():
        return _read_folder(local, split=split, limit=limit, text_fields=text_fields, guard_fields=guard_fields)
    if local.is_file():
        return read_file(local, limit=limit, text_fields=text_fields, guard_fields=guard_fields)
    if local.exists():
        raise InputError("is neither a regular file nor a folder (a pipe, socket or device cannot be read as "
                         "a dataset)", file=str(local))
    if local.suffix.lower() in SUPPORTED or not is_hub_id(text):
        raise InputError("file does not exist", file=str(local))
    return _read_hub(text, subset=subset, split=split, limit=limit, local=local)


def read_file(path: Path, *, limit: int | None = None, text_fields: Sequence[str] = (),
              guard_fields: Sequence[str] = ()) -> RawInput:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path, limit)
    if suffix in TEXT_SUFFIXES:
        return read_txt(path, limit)
    if suffix not in SUPPORTED:
        raise InputError(f"unsupported file type '{suffix or path.name}'; expected one of {', '.join(SUPPORTED)}, "
                         "a datasets.save_to_disk folder or a self-instruct output folder", file=str(path))
    data = _read_bytes(path)
    decoded = to_utf8(data)
    kind = "csv" if suffix == ".csv" else "tsv" if suffix == ".tsv" else "json" if suffix in JSON_SUFFIXES else "jsonl"
    if decoded.error is not None:
        row = RawRow(0, None, Problem("bad_encoding", decoded.error, whole_file=True, unread_bytes=len(data)), "")
        raw = RawInput(str(path), kind, "line", [RawPart(rows=[row])])
    elif suffix in JSONL_SUFFIXES:
        raw = _read_jsonl(path, decoded.data, limit, text_fields, guard_fields)
    elif suffix in JSON_SUFFIXES:
        raw = read_json_document(str(path), decoded.data, limit)
        if raw is None:  # JSON lines saved as .json
            raw = _read_jsonl(path, decoded.data, limit, text_fields, guard_fields)
    else:
        raw = _read_csv(path, decoded.data, CSV_SUFFIXES[suffix], limit)
    raw.encoding = decoded.encoding
    return raw


def read_records(path: str | os.PathLike, *, split: str = "train", subset: str | None = None) -> list[dict]:
    """Every record of a file, folder or hub dataset as the raw dict it was stored as.

    For stages that only need the texts of a reference or eval set (dedupe, decontaminate): there is
    no skipping here, so any unreadable record, or an input without records, raises InputError.
    """
    raw = read_input(path, split=split, subset=subset)
    if raw.count == 0:
        raise InputError(raw.empty_message, file=raw.file)
    values = []
    for row in raw.records():
        if row.problem is not None:
            raise problem_error(raw, row)
        values.append(row.value)
    return values


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a file the OS will not let us read is an InputError, not a traceback."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read this file: {exc.strerror or exc}", file=str(path)) from None


def _cap(text: str) -> str:
    return text[:RECORD_JSON_CAP]


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _blank(data: bytes) -> bool:
    """Empty or whitespace only; `isspace` stops at the first other byte, so this is O(1) on real data."""
    return not data or data.isspace()


def _empty_message(data: bytes) -> str:
    return "file is empty" if _blank(data) else "holds no records"


# --- JSON lines ---------------------------------------------------------------------------------

def jsonl_blocks(path: Path, block_bytes: int, text_fields: Sequence[str] = (),
                 guard_fields: Sequence[str] = ()) -> Iterator[RawInput] | None:
    """A large UTF-8 JSON-lines file as consecutive `RawInput`s of about `block_bytes` each, cut at
    line ends, with the same lines, origins and routes as reading it whole; None when the file must
    be read whole instead (another suffix or encoding, a byte-order mark, a blank file)."""
    if path.suffix.lower() not in JSONL_SUFFIXES or not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(4)
    if to_utf8(head).encoding != "utf-8" or (len(head) < 4 and not head.strip()):
        return None

    def blocks() -> Iterator[RawInput]:
        line, rest = 1, b""
        with open(path, "rb") as f:
            while True:
                chunk = f.read(block_bytes)
                data = rest + chunk
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                block, rest = data[:cut], data[cut:]
                if block:
                    raw = _read_jsonl(path, block, None, text_fields, guard_fields, first_line=line)
                    raw.encoding = "utf-8"
                    yield raw
                    line += block.count(b"\n")
                if not chunk:
                    return
    return blocks()


def _read_jsonl(path: Path, data: bytes, limit: int | None, text_fields: Sequence[str],
                guard_fields: Sequence[str], first_line: int = 1) -> RawInput:
    raw = RawInput(str(path), "jsonl", "line", empty_message=_empty_message(data))
    if not text_fields:
        raw.parts = [RawPart(rows=list(_jsonl_rows(data, first_line, limit)))]
        return raw
    table = _jsonl_fast(data, text_fields, guard_fields)
    if table is not None:
        raw.parts = [RawPart.of_table(table if limit is None else table.head(limit), first_line, data)]
        return raw
    line, start = first_line, 0
    while start < len(data) and (limit is None or raw.count < limit):
        end = data.find(b"\n", start + _RETRY_CHUNK)
        end = len(data) if end < 0 else end + 1
        chunk, left = data[start:end], None if limit is None else limit - raw.count
        table = _jsonl_fast(chunk, text_fields, guard_fields)
        if table is not None:
            raw.parts.append(RawPart.of_table(table if left is None else table.head(left), line, chunk))
        else:
            raw.parts.append(RawPart(rows=list(_jsonl_rows(chunk, line, left))))
        line, start = line + chunk.count(b"\n"), end
    return raw


def _jsonl_fast(data: bytes, text_fields: Sequence[str], guard_fields: Sequence[str]) -> pl.DataFrame | None:
    """Parse the whole file with pyarrow under a strict schema, or None if anything is off.

    pyarrow rejects a number where a string is declared (polars would quietly turn 42 into "42"),
    lone surrogates, raw control characters and duplicate keys; a guard field with a value fails the
    null type. It does not check UTF-8, so the buffer is validated first.
    Blank lines are skipped by pyarrow, so the row count must equal the line count for row i to be line i+1.
    """
    import pyarrow as pa
    from pyarrow import json as pa_json

    if _blank(data) or not _valid_utf8(data):
        return None
    fields = list(dict.fromkeys(text_fields))
    schema = pa.schema([(f, pa.string()) for f in fields] + [(g, pa.null()) for g in guard_fields if g not in fields])
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, _FAST_JSON_BLOCK))),
            # Other fields are read too, so the collect stage can report the ones it does not use.
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    if table.num_rows != _line_count(data):
        return None
    frame = pl.from_arrow(table)
    # A `null` line and a `{}` line both come back as an all-null row; let the slow route tell them apart.
    if frame.select(pl.all_horizontal(pl.all().is_null()).any()).item():
        return None
    return frame


def _valid_utf8(data: bytes) -> bool:
    """Arrow's vectorized UTF-8 check over the whole buffer (about 10x faster than bytes.decode)."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _jsonl_rows(data: bytes, first_line: int, limit: int | None) -> Iterator[RawRow]:
    n = 0
    for number, line in enumerate(data.split(b"\n"), first_line):
        if not line.strip():
            continue
        if limit is not None and n >= limit:
            return
        n += 1
        yield _parse_json_line(line, number)


def _parse_json_line(line: bytes, number: int) -> RawRow:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = _cap(line.decode("utf-8", "backslashreplace"))
        return RawRow(number, None, Problem("bad_encoding", _bad_utf8(line, exc)), raw)
    try:
        value = JSON_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return RawRow(number, None, Problem("parse_error", f"invalid JSON at column {exc.colno}: {exc.msg}"), _cap(text))
    except RecursionError:
        return RawRow(number, None, Problem("too_deep", "the record is nested too deeply to parse"), _cap(text))
    if not isinstance(value, dict):
        return RawRow(number, None, Problem("wrong_type", f"a record must be a JSON object, got {json_type(value)}"),
                      _cap(text))
    return RawRow(number, value)


def _bad_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    column = exc.start - data.rfind(b"\n", 0, exc.start)
    return (f"invalid UTF-8 byte 0x{data[exc.start]:02x} at byte {column} of the line; "
            "the file must be UTF-8 (or UTF-16/32; 8-bit encodings are not guessed)")


# --- CSV / TSV ------------------------------------------------------------------------------------

def _read_csv(path: Path, data: bytes, delimiter: str, limit: int | None) -> RawInput:
    """CSV with a header row. Every cell is text (a CSV cell "42" is the string "42"); empty and NaN
    cells are missing values. Row origins are the line the row starts on (the header is line 1)."""
    file = str(path)
    kind = "tsv" if delimiter == "\t" else "csv"
    if _blank(data):
        return RawInput(file, kind, "line", empty_message="file is empty")
    table = _csv_fast(data, delimiter, file)
    if table is not None:
        part = RawPart.of_table(table if limit is None else table.head(limit), 2)
    else:
        part = RawPart(rows=_csv_rows(data, delimiter, limit, file))
    return RawInput(file, kind, "line", [part], empty_message="has a header but no rows")


def _check_header(names: list[str], file: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"the header names column(s) {', '.join(map(repr, dupes))} more than once", file=file, line=1)


def _csv_fast(data: bytes, delimiter: str, file: str) -> pl.DataFrame | None:
    """pyarrow's CSV reader (wrong field counts and invalid UTF-8 are errors), or None.

    Only taken when every row is exactly one line, so row i is line i + 2, and when no quote could
    be misread: pyarrow reads `"x"y` as `xy` where a strict parser refuses it, so such files go the
    strict way."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        names = next(csv.reader([first.decode("utf-8")], delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    _check_header(names, file)
    if _suspect_quotes(data, delimiter):
        return None
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                  null_values=list(CSV_MISSING), strings_can_be_null=True,
                                                  quoted_strings_can_be_null=True),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    if table.column_names != names or any(t != pa.string() for t in table.schema.types):
        return None
    if table.num_rows != _line_count(data) - 1:
        return None
    return pl.from_arrow(table)


def _suspect_quotes(data: bytes, delimiter: str) -> bool:
    """Quotes a lenient parser may misread: an odd number of them (one is never closed), or a quote
    with text on both sides (`"x"y`, or a literal quote inside an unquoted cell, which is fine but
    goes the strict way to be sure). Vectorized: about 30 ms on a 60 MB file that has quotes."""
    import numpy as np

    if data.find(b'"') < 0:  # memchr: about 2 ms on 60 MB
        return False
    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(buf == ord('"'))
    if quotes.size % 2:
        return True
    inner = quotes[(quotes > 0) & (quotes < buf.size - 1)]

    def text(around: np.ndarray) -> np.ndarray:
        return (around != ord('"')) & (around != ord(delimiter)) & (around != ord("\n")) & (around != ord("\r"))

    return bool(np.any(text(buf[inner - 1]) & text(buf[inner + 1])))


def _csv_rows(data: bytes, delimiter: str, limit: int | None, file: str) -> list[RawRow]:
    """Row by row with the strict csv module, so each row knows its first line and invalid UTF-8
    stays on its line.

    A quote that is never closed would swallow every following line into one cell. So a row that
    fails to parse, or spans several lines and has the wrong number of fields, rejects only its first
    line, and reading starts again on the next one: the swallowed rows are read as rows.
    """
    lines: list[str] = []
    bad: dict[int, str] = {}
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad[number] = _bad_utf8(raw, exc)
            lines.append(raw.decode("utf-8", "replace"))

    old_limit = csv.field_size_limit(sys.maxsize)
    try:
        reader = csv.reader(iter(lines), delimiter=delimiter, strict=True)
        try:
            names = next((r for r in reader if r), None)
        except csv.Error as exc:
            raise InputError(f"the header is unreadable: {exc}", file=file, line=reader.line_num) from None
        if names is None:
            return []
        broken = next((n for n in range(1, reader.line_num + 1) if n in bad), None)
        if broken is not None:
            raise InputError(f"the header is unreadable: {bad[broken]}", file=file, line=broken)
        _check_header(names, file)
        rows: list[RawRow] = []
        done = reader.line_num
        while done < len(lines) and (limit is None or len(rows) < limit):
            done = _csv_run(lines, done, names, bad, delimiter, rows, limit)
        return rows
    finally:
        csv.field_size_limit(old_limit)


def _csv_run(lines: list[str], done: int, names: list[str], bad: dict[int, str], delimiter: str,
             rows: list[RawRow], limit: int | None) -> int:
    """Parse rows from line `done + 1` until the end or a malformed row; return the lines consumed."""
    reader = csv.reader((lines[i] for i in range(done, len(lines))), delimiter=delimiter, strict=True)
    while limit is None or len(rows) < limit:
        start = done + reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return len(lines)
        except csv.Error as exc:
            spans = done + reader.line_num > start or "end of data" in str(exc)
            rows.append(_malformed(lines, start, f"{exc}", unclosed=spans))
            return start
        end = done + reader.line_num
        if not cells:
            continue
        if end > start and len(cells) != len(names):
            rows.append(_malformed(lines, start, f"it runs to line {end} and has {len(cells)} fields, "
                                                 f"not {len(names)} as in the header", unclosed=True))
            return start
        rows.append(_csv_row(start, end, cells, names, bad, delimiter))
    return len(lines)


def _malformed(lines: list[str], line: int, why: str, *, unclosed: bool) -> RawRow:
    cause = "a quote opened on this line is probably never closed" if unclosed else \
        "a quoted cell is followed by more text before the next delimiter"
    msg = f"malformed CSV row ({why}): {cause}; reading goes on at line {line + 1}, not inside this row"
    return RawRow(line, None, Problem("parse_error", msg), _cap(lines[line - 1].rstrip("\r\n")))


def _csv_row(start: int, end: int, cells: list[str], names: list[str], bad: dict[int, str], delimiter: str) -> RawRow:
    raw = _cap(delimiter.join(cells))
    broken = next((n for n in range(start, end + 1) if n in bad), None)
    if broken is not None:
        where = f"line {broken}: " if broken != start else ""
        return RawRow(start, None, Problem("bad_encoding", where + bad[broken]), raw)
    if len(cells) != len(names):
        msg = f"expected {len(names)} fields (as in the header), got {len(cells)}"
        return RawRow(start, None, Problem("parse_error", msg), raw)
    return RawRow(start, {n: (None if c in CSV_MISSING else c) for n, c in zip(names, cells, strict=True)})


# --- Parquet, Arrow folders, self-instruct folders, the hub ----------------------------------------

def _read_parquet(path: Path, limit: int | None) -> RawInput:
    file = str(path)
    try:
        table = pl.read_parquet(path, n_rows=limit)
    except Exception as exc:  # polars raises several types for a corrupt file; all mean "not Parquet"
        problem = Problem("parse_error", f"not a readable Parquet file: {_first_line(exc)}", whole_file=True,
                          unread_bytes=path.stat().st_size)
        return RawInput(file, "parquet", "row", [RawPart(rows=[RawRow(0, None, problem, "")])])
    return _table_input(file, "parquet", table)


def _table_input(file: str, kind: str, table: pl.DataFrame) -> RawInput:
    return RawInput(file, kind, "row", [RawPart.of_table(table, 0)])


def _read_folder(path: Path, *, split: str, limit: int | None, text_fields: Sequence[str],
                 guard_fields: Sequence[str]) -> RawInput:
    manifest = path / "manifest.json"
    if manifest.is_file() and (path / "tasks.alpaca.jsonl").is_file():
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind == "self-instruct":
            tasks = path / "tasks.alpaca.jsonl"
            raw = read_file(tasks, limit=limit, text_fields=text_fields, guard_fields=guard_fields)
            raw.declared_format = "alpaca"
            return raw
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _read_saved_dataset(path, split, limit)
    raise InputError("this folder is neither a datasets.save_to_disk folder (no state.json or dataset_dict.json) "
                     "nor a self-instruct output folder (no manifest.json with kind self-instruct and "
                     "tasks.alpaca.jsonl)", file=str(path))


def _read_saved_dataset(path: Path, split: str, limit: int | None) -> RawInput:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise InputError(f"cannot load this datasets.save_to_disk folder: {_first_line(exc)}", file=str(path)) from None
    file = str(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"no split '{split}' here; the splits are: {', '.join(ds)}", file=file, field="split")
        ds, file = ds[split], f"{path}[{split}]"
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _table_input(file, "arrow", ds.to_polars())


def _read_hub(name: str, *, subset: str | None, split: str, limit: int | None, local: Path) -> RawInput:
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as exc:  # network, auth, missing config or split: all are "cannot load"
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                      for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        why = ("the hub is unreachable (offline mode is on) and the dataset is not in the local cache"
               if offline or isinstance(exc, ConnectionError) else _first_line(exc))
        raise InputError(f"no local file or folder {local} exists, and loading '{name}' from the Hugging Face hub "
                         f"failed: {why}", file=name) from None
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    label = f"hub:{name}" + (f"/{subset}" if subset else "") + f"[{split}]"
    return _table_input(label, "hub", ds.to_polars())


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]

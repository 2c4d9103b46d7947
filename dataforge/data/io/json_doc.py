"""JSON documents (`.json`): an array of records, or an object holding one list of records.

Public datasets ship broken documents: an array cut or corrupted part way, one latin-1 byte in a
UTF-8 file, one record nested beyond any parser's depth, JSON lines under a `.json` name. One fault
must cost its own record, not every record after it, so:
- invalid UTF-8 bytes are carried through parsing as escapes (surrogateescape) and reject only the
  record whose text holds them;
- a record nested too deep is skipped by matching its brackets and rejected alone;
- after a syntax error the array is resynchronised on the next item that starts where the items
  start (same indentation when each item begins a line; in a minified array, an object after a
  comma that shares a key with the records before it) and parses on to the end or the next fault.
  What lies in between is rejected, one record per item start in it, each detail saying how many
  bytes (which lines) were not read; so is a tail from which nothing parses.
"""

from __future__ import annotations

import itertools
import json
import re

from dataforge.data.io.raw import JSON_DECODER, Problem, RawInput, RawPart, RawRow, json_type
from dataforge.data.stage import RECORD_JSON_CAP
from dataforge.errors import InputError

_ESCAPED = re.compile("[\udc80-\udcff]")           # an invalid byte, as surrogateescape decodes it
_ANY_START = re.compile(r"(?:,|\n)\s*(?=\{)")  # an object after a comma or at a line start
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_KNOWN_KEYS_FROM = 100                              # items whose keys vouch for a resync candidate
_HEAD = 4 << 20                                     # how much of a document is looked at to spot JSON lines


def read_json_document(file: str, data: bytes, limit: int | None) -> RawInput | None:
    """The records of a JSON document, or None when the file holds JSON lines (read those as such)."""
    try:
        text, bad_bytes = data.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad_bytes = data.decode("utf-8", "surrogateescape"), True
    if text.lstrip().startswith("["):
        rows = _ArrayReader(text, bad_bytes).rows()
        return RawInput(file, "json", "row", [RawPart(rows=rows if limit is None else rows[:limit])],
                        empty_message="the JSON array is empty")
    try:
        doc = JSON_DECODER.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        if _holds_json_lines(text):
            return None
        return _whole_file_problem(file, data, text, exc)
    if not isinstance(doc, dict):
        raise InputError(f"a JSON file must hold an array of records or an object with one list of records, "
                         f"got {json_type(doc)}", file=file)
    lists = [k for k, v in doc.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)]
    if len(lists) != 1:
        found = f"found {len(lists)} ({', '.join(lists)})" if lists else "found none"
        raise InputError(f"a JSON object must hold exactly one list of record objects, {found}", file=file)
    items = doc[lists[0]][:limit] if limit is not None else doc[lists[0]]
    rows = [_item_row(i, item, bad_bytes) for i, item in enumerate(items)]
    return RawInput(file, "json", "row", [RawPart(rows=rows)], empty_message=f"the list '{lists[0]}' is empty")


def _holds_json_lines(text: str) -> bool:
    """A document that fails to parse, with several lines, one of the first of which is a whole
    object on its own: JSON lines saved as `.json` (common on the hub), perhaps with a bad line."""
    lines = [line for line in text[:_HEAD].splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].lstrip().startswith("{"):
        return False
    for line in lines[:10]:
        try:
            if isinstance(JSON_DECODER.decode(line), dict):
                return True
        except (json.JSONDecodeError, RecursionError):
            continue
    return False


def _whole_file_problem(file: str, data: bytes, text: str, exc: Exception) -> RawInput:
    if isinstance(exc, RecursionError):
        problem = Problem("too_deep", f"the JSON document is nested too deeply to parse; none of its "
                                      f"{len(data):,} bytes were read", whole_file=True, unread_bytes=len(data))
        context = text[:200]
    else:
        problem = Problem("parse_error", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                                         f"none of the file's {len(data):,} bytes were read", whole_file=True,
                          unread_bytes=len(data))
        context = text[max(0, exc.pos - 200):exc.pos + 200]
    return RawInput(file, "json", "row", [RawPart(rows=[RawRow(0, None, problem, _shown(context))])])


def _shown(text: str) -> str:
    """Text for the rejects file: invalid bytes as \\xNN escapes, capped."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:RECORD_JSON_CAP]


def _item_row(index: int, item: object, bad_bytes: bool) -> RawRow:
    if not isinstance(item, dict):
        problem = Problem("wrong_type", f"a record must be a JSON object, got {json_type(item)}")
        return RawRow(index, None, problem, _shown(json.dumps(item, ensure_ascii=False)))
    found = _escaped_byte(item) if bad_bytes else None
    if found is None:
        return RawRow(index, item)
    field, byte = found
    problem = Problem("bad_encoding", f"invalid UTF-8 byte 0x{byte:02x} in this record; the file must be UTF-8 "
                                      "(or UTF-16/32; 8-bit encodings are not guessed)", field=field)
    return RawRow(index, None, problem, _shown(json.dumps(item, ensure_ascii=False)))


def _escaped_byte(item: dict) -> tuple[str, int] | None:
    """(top-level field, byte) of an invalid byte in a record's keys or values, or None."""
    stack: list[tuple[str, object]] = [(str(k), k) for k in item] + [(str(k), v) for k, v in item.items()]
    while stack:
        field, value = stack.pop()
        if isinstance(value, str):
            match = _ESCAPED.search(value)
            if match:
                return field, ord(match.group()) - 0xDC00
        elif isinstance(value, dict):
            stack.extend((field, x) for pair in value.items() for x in pair)
        elif isinstance(value, list):
            stack.extend((field, x) for x in value)
    return None


class _ArrayReader:
    """Reads a JSON array item by item, rejecting what cannot be read and resuming after it."""

    def __init__(self, text: str, bad_bytes: bool):
        self.text, self.bad_bytes = text, bad_bytes
        self.out: list[RawRow] = []
        self.keys: set[str] = set()
        self.good = 0
        self.starts = _ANY_START

    def rows(self) -> list[RawRow]:
        text = self.text
        if not self.bad_bytes:
            try:
                items = JSON_DECODER.decode(text)
                return [_item_row(i, item, False) for i, item in enumerate(items)]
            except (json.JSONDecodeError, RecursionError):
                pass
        pos = self._skip(text.index("[") + 1)
        self.starts = self._start_pattern(pos)
        if pos < len(text) and text[pos] == "]":
            self._trailing(self._skip(pos + 1))
            return self.out
        while pos is not None:
            pos = self._item(pos)
        return self.out

    def _skip(self, pos: int) -> int:
        text = self.text
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def _start_pattern(self, first: int) -> re.Pattern:
        """Where an item can start: at the first item's indentation when it begins its own line
        (pretty-printed arrays), else after a comma or at a line start."""
        line_start = self.text.rfind("\n", 0, first) + 1
        indent = self.text[line_start:first]
        if line_start > 0 and not indent.strip():
            return re.compile("\n" + re.escape(indent) + r"(?=\{)")
        return _ANY_START

    def _item(self, pos: int) -> int | None:
        """Read the item at `pos`; the position of the next one, or None at the end."""
        text = self.text
        if pos >= len(text):
            self._reject(pos, len(text), "the array is not closed (the file ends inside it)", None)
            return None
        try:
            item, end = JSON_DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            return self._resync(pos, pos + 1, exc.msg, exc.pos)
        except RecursionError:
            end = self._balanced_end(pos)
            if end is None:
                return self._resync(pos, pos + 1, "nested too deeply to parse", pos)
            self.out.append(RawRow(len(self.out), None, Problem(
                "too_deep", f"the record is nested too deeply to parse ({end - pos:,} characters, "
                            f"from line {self._line(pos)})"), _shown(text[pos:end])))
            return self._after(end)
        self.out.append(_item_row(len(self.out), item, self.bad_bytes))
        if isinstance(item, dict) and self.good < _KNOWN_KEYS_FROM:
            self.keys.update(item)
            self.good += 1
        return self._after(end)

    def _after(self, end: int) -> int | None:
        text = self.text
        pos = self._skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = self._skip(pos + 1)
            if pos < len(text) and text[pos] == "]":     # a trailing comma loses nothing
                self._trailing(self._skip(pos + 1))
                return None
            return pos
        if pos < len(text) and text[pos] == "]":
            self._trailing(self._skip(pos + 1))
            return None
        return self._resync(pos, end, "expected ',' or ']' after an array item", pos)

    def _trailing(self, pos: int) -> None:
        if pos < len(self.text):
            self._reject(pos, len(self.text), "unexpected data after the end of the array", pos)

    def _resync(self, start: int, search_from: int, msg: str, error_at: int) -> int | None:
        """Reject from `start` up to the next item that parses; return where it starts (None: no such item)."""
        for match in self.starts.finditer(self.text, search_from):
            candidate = match.end()
            if self._parses_as_item(candidate):
                if candidate > start:
                    self._reject_span(start, candidate, msg, error_at)
                return candidate
        self._reject_span(start, len(self.text), msg, error_at)
        return None

    def _reject_span(self, start: int, end: int, msg: str, error_at: int) -> None:
        """Reject [start, end), one record per item start in it when items begin their own lines (so
        the count of records read stays the count of items); in a minified array, where a nested
        object looks like an item start, the span is one record."""
        cuts = [m.end() for m in self.starts.finditer(self.text, start + 1, end)] if self.starts is not _ANY_START else []
        bounds = [start, *cuts, end]
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            if i:
                msg, error_at = self._why(a)
            self._reject(a, b, msg, error_at)

    def _why(self, pos: int) -> tuple[str, int]:
        """Why the item at `pos` could not be read: the parser's message and where it stopped."""
        try:
            _, end = JSON_DECODER.raw_decode(self.text, pos)
        except json.JSONDecodeError as exc:
            return exc.msg, exc.pos
        except RecursionError:
            return "nested too deeply to parse", pos
        return "expected ',' or ']' after an array item", self._skip(end)

    def _parses_as_item(self, pos: int) -> bool:
        """Whether a top-level item starts at `pos`: an object sharing a key with the records read so
        far, followed by items up to the array's end or the next fault. An object nested in a
        record fails this: after its list closes comes more of the record (`]}`), not the end."""
        text, first = self.text, True
        while True:
            try:
                item, end = JSON_DECODER.raw_decode(text, pos)
            except (json.JSONDecodeError, RecursionError):
                return not first
            if first and not (isinstance(item, dict) and (self.starts is not _ANY_START or not self.keys
                                                            or not self.keys.isdisjoint(item))):
                return False
            first = False
            follow = self._skip(end)
            if follow < len(text) and text[follow] == ",":
                pos = self._skip(follow + 1)
                if pos >= len(text) or text[pos] != "]":
                    continue
                follow = pos
            if follow >= len(text):
                return True
            if text[follow] == "]":
                after = self._skip(follow + 1)
                return after >= len(text) or text[after] not in ",}]"
            return False

    def _balanced_end(self, pos: int) -> int | None:
        """The end of the bracketed value at `pos`, strings skipped; None if its brackets never close."""
        depth = 0
        for token in _TOKEN.finditer(self.text, pos):
            ch = token.group()
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return token.end()
        return None

    def _line(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def _reject(self, start: int, end: int, msg: str, error_at: int | None) -> None:
        """One rejected record for the characters [start, end) that could not be read."""
        text = self.text
        where = f"invalid JSON at line {self._line(error_at)}, column {error_at - text.rfind(chr(10), 0, error_at)}: " \
            if error_at is not None else ""
        stop = start + len(text[start:end].rstrip(" \t\r\n,"))
        first, last = self._line(start), self._line(max(start, stop - 1))
        lines = f"lines {first}-{last}" if last > first else f"line {first}"
        size = len(text[start:stop].encode("utf-8", "surrogateescape"))
        if end < len(text):
            lost = f"{size:,} bytes ({lines}) were not read"
        else:
            lost = f"the remaining {size:,} bytes ({lines}) were not read: no record after it parses"
        problem = Problem("parse_error", f"{where}{msg}; {lost}", unread_bytes=size)
        self.out.append(RawRow(len(self.out), None, problem, _shown(text[start:end])))

"""The clean stage: normalize the text, drop records that cannot teach anything, fingerprint the rest.

Rewriting and judging are separate functions:
- `fill_placeholders` (dataforge.data.placeholders) fills the `{{name}}` placeholders the user gave
  values for (`clean.fill`);
- `normalize_records` rewrites text without changing what it says: Unicode normalization (NFC by
  default), then whitespace collapsing that keeps newlines and the indentation of code;
- `first_control_field` and `drop_reason` judge and never edit: control characters are looked for in
  the text as read, emptiness and length bounds in the text as it will be kept.

A plain-text record (`kind` "text") has no instruction by design, so the instruction checks skip it.
Tool schemas (`tools`) are JSON and are neither rewritten nor judged; tool turns are treated like
history turns.

Everything is polars expressions over whole columns; Python runs per row only to hash (xxhash has no
vectorized API) and to word the detail of control-character rejects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import reduce

import polars as pl
import xxhash

from dataforge.config.build import CleanConfig
from dataforge.data.placeholders import fill_placeholders, placeholder_counts
from dataforge.data.record import CONTENT_HASH, KIND_TEXT
from dataforge.data.stage import StageResult, make_rejects

STAGE = "clean"
TEXT_FIELDS = ("system", "instruction", "input", "output")
# C0 and C1 controls other than tab, newline and carriage return, plus U+FFFD, the mark that a decoder
# met bytes that were not valid text. The same pattern works in polars (Rust regex) and Python `re`.
CONTROL_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\uFFFD]"
_CONTROL_RE = re.compile(CONTROL_CHARS)
_REASON, _DETAIL, _CONTROL = "__reason", "__detail", "__control"
TURN_FIELDS = ("history", "tool_turns")


def clean(records: pl.DataFrame, cfg: CleanConfig) -> StageResult:
    """Fill the placeholders `cfg.fill` names, drop bad records (reason and detail name the field),
    normalize the rest and add `content_hash`. Rejects carry the record as it came in, not as
    normalized. Stats: per source, the `{{placeholders}}` filled and those left in kept records."""
    filled = fill_placeholders(records, cfg.fill)
    judged = normalize_records(filled, cfg)
    if cfg.drop_control_chars:
        judged = judged.with_columns(records.select(first_control_field(_turn_fields(records))).to_series())
    judged = judged.with_columns(drop_reason(cfg, records.columns))
    dropped = judged[_REASON].is_not_null()
    bad = records.filter(dropped).hstack(judged.filter(dropped).select(_REASON, _DETAIL))
    if bad.height:
        bad = bad.with_columns(pl.Series(_DETAIL, _word_details(bad), dtype=pl.String))
    kept = judged.filter(~dropped).select(records.columns)
    kept = kept.with_columns(pl.Series(CONTENT_HASH, content_hashes(kept), dtype=pl.String))
    stats = {"placeholders": placeholder_counts(kept)}
    if cfg.fill:
        stats["filled"] = {src: {k: n for k, n in names.items() if k[2:-2] in cfg.fill}
                           for src, names in placeholder_counts(records.filter(~dropped)).items()}
        stats["filled"] = {src: names for src, names in stats["filled"].items() if names}
    return StageResult(kept=kept, rejected=make_rejects(bad, STAGE, pl.col(_REASON), pl.col(_DETAIL)), stats=stats)


def _turn_fields(records: pl.DataFrame) -> list[str]:
    """The turn columns to rewrite and judge: history, and tool_turns when any record has some (the
    list evaluations cost about a second per million records even over empty lists)."""
    return ["history"] + (["tool_turns"] if _any_tools(records) else [])


def _any_tools(records: pl.DataFrame) -> bool:
    return "tool_turns" in records.columns and bool(records["tool_turns"].list.len().fill_null(0).sum()) or \
        "tools" in records.columns and bool((records["tools"].fill_null("") != "").any())


def collapse_runs(text: pl.Expr) -> pl.Expr:
    """CRLF becomes LF; spaces and tabs are trimmed from line ends; a run of spaces/tabs after the first
    visible character of a line becomes one space (so leading indentation is kept); more than one
    blank line in a row becomes one."""
    return (text.str.replace_all("\r\n", "\n", literal=True)
            .str.replace_all(r"[ \t]+\n", "\n")
            .str.replace_all(r"([^ \t\n])(?:[ \t]{2,}|\t)", "${1} ")
            .str.replace_all(r"\n{3,}", "\n\n"))


def trim_field(text: pl.Expr) -> pl.Expr:
    """A single-line field is stripped at both ends. A multi-line field loses leading blank lines and
    trailing whitespace but keeps its first line's indentation: code often starts indented, and
    stripping the first line alone would break its structure."""
    return (pl.when(text.str.contains("\n", literal=True))
            .then(text.str.strip_chars_end().str.replace(r"^(?:[ \t]*\n)+", ""))
            .otherwise(text.str.strip_chars()))


def normalize_records(records: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """Unicode normalization (`cfg.normalize`), then, if `cfg.collapse_whitespace`, `collapse_runs`
    and `trim_field`; applied to system, instruction, input, output and every history turn.

    Unicode normalization is the costly part and cannot change ASCII text, so in the top-level fields
    it runs on the non-ASCII values only."""
    fields = []
    for f in TEXT_FIELDS:
        text = records[f].fill_null("")
        if cfg.normalize != "none":
            rows = (text.str.len_bytes() != text.str.len_chars()).arg_true()  # the non-ASCII values
            if rows.len():
                text = text.scatter(rows, text.gather(rows).str.normalize(cfg.normalize))
        fields.append(text)
    turn_fields = _turn_fields(records)
    turns = [pl.col(t).fill_null([]) for t in turn_fields]
    if cfg.normalize != "none":
        turns = [t.list.eval(pl.element().struct.with_fields(pl.field("content").str.normalize(cfg.normalize)))
                 for t in turns]
    out = records.with_columns(*fields, *turns)
    if cfg.collapse_whitespace:
        # Two passes so each rewritten column is computed once (eager polars does not share subexpressions).
        for step in (collapse_runs, trim_field):
            out = out.with_columns(
                *(step(pl.col(f)) for f in TEXT_FIELDS),
                *(pl.col(t).list.eval(pl.element().struct.with_fields(step(pl.field("content"))))
                  for t in turn_fields),
            )
    return out


def first_control_field(columns: Sequence[str] = TURN_FIELDS) -> pl.Expr:
    """`__control`: the first field (system, history, instruction, tool_turns, input, output) holding a
    control character, or null. Run on the text as read: normalization could strip some (a trailing
    U+0085). `columns` are the turn columns to look in (history always)."""
    has = {f: pl.col(f).str.contains(CONTROL_CHARS).fill_null(False) for f in TEXT_FIELDS}
    for t in TURN_FIELDS:
        in_turns = pl.col(t).list.eval(pl.element().struct.field("content").str.contains(CONTROL_CHARS))
        has[t] = in_turns.list.any().fill_null(False) if t in columns else pl.lit(False)
    order = ("system", "history", "instruction", "tool_turns", "input", "output")
    expr = reduce(lambda acc, f: acc.when(has[f]).then(pl.lit(f)), order[1:], pl.when(has[order[0]]).then(pl.lit(order[0])))
    return expr.otherwise(pl.lit(None, dtype=pl.String)).alias(_CONTROL)


def drop_reason(cfg: CleanConfig, columns: Sequence[str] = ("kind",)) -> list[pl.Expr]:
    """`__reason` and `__detail` over normalized records: the first failed check, or null.

    Order: control_chars, empty_instruction, empty_output, then too_short/too_long for instruction,
    input and output, with lengths in characters of the normalized text. Plain-text records skip
    the instruction checks."""
    checks: list[tuple[pl.Expr, str, pl.Expr]] = []
    if cfg.drop_control_chars:
        checks.append((pl.col(_CONTROL).is_not_null(), "control_chars", pl.col(_CONTROL)))  # worded by _word_details
    prompted = pl.col("kind").fill_null("") != KIND_TEXT if "kind" in columns else pl.lit(True)
    applies = {"instruction": prompted, "input": pl.lit(True), "output": pl.lit(True)}
    for f in ("instruction", "output"):
        checks.append((applies[f] & (pl.col(f).str.strip_chars() == ""), f"empty_{f}",
                       pl.lit(f"field '{f}' is empty or whitespace only")))
    for f in ("instruction", "input", "output"):
        bounds, n = getattr(cfg, f), pl.col(f).str.len_chars()
        checks.append((applies[f] & (n < bounds.min_chars), "too_short",
                       pl.format(f"field '{f}' has {{}} characters, fewer than {f}.min_chars = {bounds.min_chars}", n)))
        checks.append((n > bounds.max_chars, "too_long",
                       pl.format(f"field '{f}' has {{}} characters, more than {f}.max_chars = {bounds.max_chars}", n)))
    first, rest = checks[0], checks[1:]
    none = pl.lit(None, dtype=pl.String)
    reason = reduce(lambda acc, c: acc.when(c[0]).then(pl.lit(c[1])), rest, pl.when(first[0]).then(pl.lit(first[1])))
    detail = reduce(lambda acc, c: acc.when(c[0]).then(c[2]), rest, pl.when(first[0]).then(first[2]))
    return [reason.otherwise(none).alias(_REASON), detail.otherwise(none).alias(_DETAIL)]


def _word_details(bad: pl.DataFrame) -> list[str]:
    """Final detail texts: a control-character reject names the field, the turn and the character."""
    return [_control_detail(row) if row[_REASON] == "control_chars" else row[_DETAIL]
            for row in bad.select(_REASON, _DETAIL, *TEXT_FIELDS, *(t for t in TURN_FIELDS if t in bad.columns))
            .iter_rows(named=True)]


def _control_detail(row: dict) -> str:
    texts = [("system", row["system"])]
    texts += [(f"history[{i}].content", turn["content"]) for i, turn in enumerate(row["history"] or [])]
    texts.append(("instruction", row["instruction"]))
    texts += [(f"tool_turns[{i}].content", turn["content"]) for i, turn in enumerate(row.get("tool_turns") or [])]
    texts += [(f, row[f]) for f in ("input", "output")]
    for name, text in texts:
        match = _CONTROL_RE.search(text or "")
        if match:
            code = ord(match.group())
            what = "the replacement character (text that was not valid Unicode)" if code == 0xFFFD else "a control character"
            return f"field '{name}' holds U+{code:04X}, {what}, at character {match.start()}"
    return f"field '{row[_DETAIL]}' holds a control character"


def content_hashes(records: pl.DataFrame) -> list[str]:
    """xxh3_64 hex of (system, history, instruction, input, output), the same on every machine and run.

    Each part is written as `<length in characters>:<text>` and the parts are concatenated in that
    order (history as role, content per turn). Length prefixes make the encoding unambiguous whatever
    the text holds, so two records share a hash only if they share every field. A record with tools
    or tool turns appends them (tools as `<length>:<json>`, then the turns), so records without them
    keep the hash they always had."""
    def enc(e: pl.Expr) -> pl.Expr:
        return pl.concat_str([e.str.len_chars().cast(pl.String), pl.lit(":"), e])

    turn = pl.concat_str([enc(pl.element().struct.field("role")), enc(pl.element().struct.field("content"))])
    parts = [enc(pl.col("system")), pl.col("history").list.eval(turn).list.join(""),
             enc(pl.col("instruction")), enc(pl.col("input")), enc(pl.col("output"))]
    if _any_tools(records):
        tools, turns = pl.col("tools").fill_null(""), pl.col("tool_turns").fill_null([])
        tool_part = pl.concat_str([enc(tools), turns.list.eval(turn).list.join("")])
        parts.append(pl.when((tools != "") | (turns.list.len() > 0)).then(tool_part).otherwise(pl.lit("")))
    keys = records.select(pl.concat_str(parts))
    return [xxhash.xxh3_64_hexdigest(k.encode("utf-8")) for k in keys.to_series()]

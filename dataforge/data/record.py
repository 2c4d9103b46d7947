"""The one record type that flows through the build, as a polars schema.

Every stage takes a `pl.DataFrame` with (at least) these columns and returns frames with the same
columns, so a stage runs the same in-process or under a distributed engine (Ray Data map_batches
over Arrow batches). Multi-turn conversations keep their earlier turns in `history`; the last user
turn is `instruction` and the last assistant turn is `output`.

Tool-calling conversations keep the tool schemas as JSON text in `tools` and the turns between the
last user turn and the final answer (assistant calls, `tool` results) in `tool_turns`, so the last
user turn stays the instruction and only the final answer is trained. A plain-text record (`kind`
"text") has only `output` and is trained on whole, with no prompt.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

MESSAGE = pl.Struct({"role": pl.Utf8, "content": pl.Utf8})

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,             # unique within a run: "<source>:<input index>:<line or row>"
    "source": pl.Utf8,         # source name from the config; drives mixing and per-source stats
    "origin_file": pl.Utf8,    # the file (or hub id) the record came from
    "origin_line": pl.Int64,   # 1-based line (jsonl, csv) or 0-based row index (json array, parquet, hf)
    "system": pl.Utf8,
    "history": pl.List(MESSAGE),
    "instruction": pl.Utf8,
    "input": pl.Utf8,
    "output": pl.Utf8,
    "tools": pl.Utf8,          # tool schemas as a JSON array, "" when the conversation has none
    "tool_turns": pl.List(MESSAGE),   # assistant tool calls and tool results after the instruction
    "kind": pl.Utf8,           # "sft" (prompt -> response) or "text" (plain text, trained whole)
}
KIND_SFT, KIND_TEXT = "sft", "text"


class Canonical(NamedTuple):
    """One record's content fields, as a format parser hands them to the collect stage."""

    system: str
    history: list[dict]
    instruction: str
    input: str
    output: str
    tools: str = ""
    tool_turns: list[dict] = []
    kind: str = KIND_SFT

# Preference builds (task: preference): a row is one pair, `output` its chosen answer; KTO rows have
# `kto_label` set and `rejected` "".
REJECTED = "rejected"
KTO_LABEL = "kto_label"
PREFERENCE_SCHEMA: dict[str, pl.DataType] = {**RECORD_SCHEMA, REJECTED: pl.Utf8, KTO_LABEL: pl.Boolean}
PROMPT_ID = "prompt_id"            # clean (preference): xxh3_64 hex of the normalized prompt; pairs of one prompt share it
REJECTED_RESPONSE = "rejected_response"   # template (preference): the rendered rejected answer

# Columns added by later stages.
CONTENT_HASH = "content_hash"    # clean: xxh3_64 hex of the normalized (system, history, instruction, input, output)
CLUSTER_ID = "cluster_id"        # dedupe: id of the record kept for this record's near-duplicate cluster
SPLIT = "split"                  # split: train | val | test
PROMPT = "prompt"                # template: rendered prompt text (for non-chat templates)
RESPONSE = "response"            # template: rendered response text
TEMPLATE_VARIANT = "template_variant"
ASSISTANT_SPANS = "assistant_spans"   # template: flat [start, end, ...] of earlier assistant turns to train (dataforge.data.turns)

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.Utf8,          # collect | clean | dedupe_exact | dedupe_near | dedupe_reference | decontaminate | mix | tokenize
    "reason": pl.Utf8,         # short machine-readable reason, e.g. empty_output, parse_error, near_duplicate
    "detail": pl.Utf8,         # human-readable: names file, line and field where it applies
    "id": pl.Utf8,
    "source": pl.Utf8,
    "origin_file": pl.Utf8,
    "origin_line": pl.Int64,
    "record": pl.Utf8,         # the record as JSON (or the raw text for unparseable lines), capped at 2,000 chars
}


def with_record_defaults(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in RECORD_SCHEMA order, with the optional columns (tools, tool turns, kind) a plain
    instruction record does not set filled with their empty values."""
    defaults = {"system": pl.lit(""), "history": pl.lit([], dtype=RECORD_SCHEMA["history"]), "tools": pl.lit(""),
                "tool_turns": pl.lit([], dtype=RECORD_SCHEMA["tool_turns"]), "kind": pl.lit(KIND_SFT)}
    missing = [e.alias(c) for c, e in defaults.items() if c not in frame.columns]
    return frame.with_columns(missing).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=PREFERENCE_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)

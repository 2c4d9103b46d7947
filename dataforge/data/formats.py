"""Record formats: Alpaca, ShareGPT, OpenAI messages, and any of them under your own field names.

A raw record becomes the canonical fields `(system, history, instruction, input, output)`, or a
`RecordProblem` naming the field that is wrong and why. Nothing is guessed: a number where text
belongs is a `wrong_type` problem, never quietly turned into a string.

Formats (`InputSpec.format`; `auto` picks one per record from its fields):
- Alpaca: `instruction`, `output`, optional `input`, `system`, and `history` as [[user, assistant], ...].
- ShareGPT: `conversations`: [{from: human|user|gpt|assistant|system, value}].
- OpenAI messages: `messages`: [{role: user|assistant|system, content}].
- mapped: `InputSpec.columns` renames fields (canonical -> yours) for every format.

A conversation keeps a leading system turn as `system`; it must end with a user turn followed by an
assistant turn, which become `instruction` and `output`; the turns between are `history`. The kept
record never holds nulls: absent `system` and `input` are "", absent `history` is [].
"""

from __future__ import annotations

import json

import polars as pl

from dataforge.config.build import InputFormat, InputSpec
from dataforge.data.io.raw import json_type
from dataforge.data.record import MESSAGE

CANONICAL = ("instruction", "input", "output", "system", "history", "conversations", "messages")
TEXT_FIELDS = ("instruction", "input", "output", "system")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}

Canonical = tuple[str, list[dict], str, str, str]   # system, history, instruction, input, output


class RecordProblem(Exception):
    """One record cannot become a canonical record; `field` uses the record's own field names."""

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


class FieldNames:
    """Canonical field name -> the name it has in the user's records."""

    def __init__(self, columns: dict[str, str]):
        self.names = {c: columns.get(c, c) for c in CANONICAL}

    def __getitem__(self, canonical: str) -> str:
        return self.names[canonical]


def column_problems(spec: InputSpec) -> list[str]:
    """Config problems in `columns`/`format`, as `path: message` lines for a ConfigError."""
    problems = [f"columns.{k}: unknown field; map one of: {', '.join(CANONICAL)}" for k in spec.columns if k not in CANONICAL]
    if spec.format == InputFormat.mapped and not spec.columns:
        problems.append("columns: format 'mapped' needs a mapping, e.g. {instruction: question, output: answer}")
    return problems


def fast_fields(fmt: InputFormat, names: FieldNames) -> tuple[list[str], list[str]]:
    """(text fields, guard fields) for the readers' vectorized route; none for conversation formats,
    which are read record by record. A guard field holding a value sends a file down the slow route."""
    if fmt in (InputFormat.sharegpt, InputFormat.messages):
        return [], []
    guards = [names["history"]]
    if fmt != InputFormat.alpaca:
        guards += [names["messages"], names["conversations"]]
    return [names[c] for c in TEXT_FIELDS], guards


def detect(value: dict, names: FieldNames) -> InputFormat:
    if value.get(names["messages"]) is not None:
        return InputFormat.messages
    if value.get(names["conversations"]) is not None:
        return InputFormat.sharegpt
    return InputFormat.alpaca


def to_canonical(value: dict, fmt: InputFormat, names: FieldNames, missing: str = "is missing or null") -> Canonical:
    """One raw record as canonical fields; raises RecordProblem. `missing` words an absent value
    the way the source shows it (CSV: an empty or NaN cell)."""
    if fmt in (InputFormat.auto, InputFormat.mapped):
        fmt = detect(value, names)
    if fmt == InputFormat.messages:
        return _conversation(value, names["messages"], "role", "content", MESSAGE_ROLES, missing)
    if fmt == InputFormat.sharegpt:
        return _conversation(value, names["conversations"], "from", "value", SHAREGPT_ROLES, missing)
    instruction = _text(value, names["instruction"], True, missing)
    input_ = _text(value, names["input"], False, missing)
    output = _text(value, names["output"], True, missing)
    system = _text(value, names["system"], False, missing)
    return system, _alpaca_history(value.get(names["history"]), names["history"]), instruction, input_, output


def canonical_from_table(frame: pl.DataFrame, fmt: InputFormat, names: FieldNames) -> pl.DataFrame | None:
    """The vectorized twin of `to_canonical` for flat Alpaca-like tables, or None when the table needs
    the per-record route (conversations, history, or a text column that is not text). Returns the
    canonical columns plus `missing_field`: the first required field that is null, per row."""
    if fmt in (InputFormat.sharegpt, InputFormat.messages):
        return None
    cols = set(frame.columns)

    def has_values(canonical: str) -> bool:
        name = names[canonical]
        return name in cols and frame[name].null_count() < frame.height

    if has_values("history"):
        return None
    if fmt != InputFormat.alpaca and (has_values("messages") or has_values("conversations")):
        return None
    if any(names[c] in cols and frame.schema[names[c]] not in (pl.String, pl.Null) for c in TEXT_FIELDS):
        return None

    def col(canonical: str) -> pl.Expr:
        name = names[canonical]
        return pl.col(name).cast(pl.String) if name in cols else pl.lit(None, dtype=pl.String)

    missing = (pl.when(col("instruction").is_null()).then(pl.lit(names["instruction"]))
               .when(col("output").is_null()).then(pl.lit(names["output"]))
               .otherwise(pl.lit(None, dtype=pl.String)))
    return frame.select(
        col("system").fill_null("").alias("system"),
        pl.lit([], dtype=pl.List(MESSAGE)).alias("history"),
        col("instruction").alias("instruction"),
        col("input").fill_null("").alias("input"),
        col("output").alias("output"),
        missing.alias("missing_field"),
    )


def describe(value: object) -> str:
    """`number 42`, `array [1, 2]`: the type and a short look at the value, for wrong_type messages."""
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return f"{json_type(value)} {shown[:60]}{'...' if len(shown) > 60 else ''}"


def _text(value: dict, name: str, required: bool, missing: str) -> str:
    v = value.get(name)
    if v is None:
        if required:
            raise RecordProblem("missing_field", missing, name)
        return ""
    return _check_str(v, name)


def _check_str(v: object, name: str) -> str:
    if not isinstance(v, str):
        raise RecordProblem("wrong_type", f"expected a string, got {describe(v)}", name)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordProblem("invalid_unicode", f"holds a lone surrogate U+{ord(v[exc.start]):04X} at character "
                                               f"{exc.start}, which is not valid Unicode", name) from None
    return v


def _alpaca_history(value: object, name: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordProblem("wrong_type", f"expected a list of [user, assistant] pairs, got {describe(value)}", name)
    history = []
    for i, pair in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RecordProblem("wrong_type", f"expected a [user, assistant] pair, got {describe(pair)}", where)
        user, assistant = (_check_str(x, f"{where}[{j}]") for j, x in enumerate(pair))
        history += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return history


def _conversation(value: dict, name: str, role_key: str, content_key: str, roles: dict[str, str],
                  missing: str) -> Canonical:
    turns_value = value.get(name)
    if turns_value is None:
        raise RecordProblem("missing_field", missing, name)
    if not isinstance(turns_value, list):
        raise RecordProblem("wrong_type", f"expected a list of turns, got {describe(turns_value)}", name)
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(turns_value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise RecordProblem("wrong_type", f"expected a turn object, got {describe(turn)}", where)
        raw_role = turn.get(role_key)
        if raw_role is None:
            raise RecordProblem("missing_field", missing, f"{where}.{role_key}")
        role = roles.get(_check_str(raw_role, f"{where}.{role_key}").lower())
        if role is None:
            raise RecordProblem("unknown_role", f"unknown role {raw_role!r}; expected one of {', '.join(roles)}",
                                f"{where}.{role_key}")
        content = turn.get(content_key)
        if content is None:
            raise RecordProblem("missing_field", missing, f"{where}.{content_key}")
        turns.append((role, _check_str(content, f"{where}.{content_key}")))
    return _split_turns(turns, name)


def _split_turns(turns: list[tuple[str, str]], name: str) -> Canonical:
    """Leading system turn -> system; final user/assistant pair -> instruction/output; the rest -> history."""
    if not turns:
        raise RecordProblem("no_user_turn", "the conversation is empty", name)
    system, first = "", 0
    if turns[0][0] == "system":
        system, first = turns[0][1], 1
    for i in range(first, len(turns)):
        if turns[i][0] == "system":
            raise RecordProblem("bad_turn_order", f"turn {i} is a system turn; only the first turn may be one", name)
    body = turns[first:]
    if not any(role == "user" for role, _ in body):
        raise RecordProblem("no_user_turn", "the conversation has no user turn", name)
    # Only user and assistant turns are left here, so the two failures below are fully described.
    if body[-1][0] != "assistant":
        raise RecordProblem("no_assistant_reply", "the conversation must end with an assistant turn, "
                                                  "but it ends with a user turn", name)
    if body[-2][0] != "user":
        raise RecordProblem("bad_turn_order", "the conversation ends with two assistant turns; "
                                              "the last one must answer a user turn", name)
    history = [{"role": role, "content": content} for role, content in body[:-2]]
    return system, history, body[-2][1], "", body[-1][1]

"""Record formats: Alpaca, ShareGPT, OpenAI messages, self-instruct seeds, plain text, and any of
them under your own field names.

A raw record becomes a `Canonical` record (see dataforge.data.record), or a `RecordProblem` naming the
field that is wrong and why. Nothing is guessed: a number where text belongs is a `wrong_type`
problem, never quietly turned into a string.

Formats (`InputSpec.format`; `auto` picks one per record from its fields):
- Alpaca: `instruction`, `output`, optional `input`, `system`, and `history` as [[user, assistant], ...].
- ShareGPT: `conversations`: [{from, value}], optional `system` and `tools` (see conversations.py).
- OpenAI messages: `messages`: [{role, content}], content a string or a list of text parts; `tools`.
- self-instruct seed tasks: `instruction` and `instances`: [{input, output}], one record per instance.
- text: a `text` field (or a line of a .txt file), trained on whole: no prompt, `kind` "text".
- mapped: `InputSpec.columns` renames fields (canonical -> yours) for every format.

Self-instruct seeds: each instance is one record read, kept or rejected on its own (id and origin
are the line plus `#<instance index>`), so `read = kept + rejected` counts training examples: a seed
with three instances of which one has no output is 3 read, 2 kept, 1 rejected. A seed with no usable
`instances` list at all is one record read, rejected once.

Fields a record's format does not use are reported, never dropped silently (`unused_fields`); fields
that change what a record means (labels, preferences, scores) are refused unless the input lists
them in `ignore_fields` (`meaning_field_error`), since building them as SFT would train on answers
that the data marks as bad.

The kept record never holds nulls: absent `system` and `input` are "", absent `history` is [].
"""

from __future__ import annotations

import polars as pl

from dataforge.config.build import PREFERENCE_FORMATS, InputFormat, InputSpec
from dataforge.data.conversations import (
    CANONICAL_ROLES,
    MESSAGE_ROLES,
    SHAREGPT_ROLES,
    RecordProblem,
    check_str,
    conversation,
    describe,
)
from dataforge.data.record import KIND_SFT, KIND_TEXT, MESSAGE, Canonical

CANONICAL = ("instruction", "input", "output", "system", "history", "conversations", "messages", "tools",
             "instances", "text")
# Fields only the preference formats read (dataforge.data.preference); `columns` may map them there.
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected", "completion", "completions", "ranks", "scores", "label")
TEXT_FIELDS = ("instruction", "input", "output", "system")
# Keys inside a conversation turn, per format (mapped with `columns: {role: ..., content: ...}`).
TURN_KEYS = {"sharegpt": ("from", "value"), "messages": ("role", "content")}
# Each format's fields, by canonical name.
USED = {
    InputFormat.alpaca: ("instruction", "input", "output", "system", "history"),
    InputFormat.sharegpt: ("conversations", "system", "tools"),
    InputFormat.messages: ("messages", "system", "tools"),
    InputFormat.self_instruct: ("instruction", "instances"),
    InputFormat.text: ("text",),
}
# Fields that change what a record means: building such data as SFT would train on every answer alike.
MEANING_FIELDS = {
    "label": "a KTO-style desirable/undesirable label",
    "kto_tag": "a KTO-style desirable/undesirable label",
    "chosen": "a preferred answer (preference data)",
    "rejected": "a dispreferred answer (preference data)",
    "score": "a quality score",
    "scores": "quality scores",
    "rating": "a quality rating",
    "ranks": "a ranking of answers",
    "completions": "several scored completions",
}


class FieldNames:
    """Canonical field name -> the name it has in the user's records, and the role names of each
    conversation format (defaults plus the input's `roles`)."""

    def __init__(self, columns: dict[str, str], roles: dict[str, str] | None = None):
        self.names = {c: columns.get(c, c) for c in (*CANONICAL, *PREFERENCE_FIELDS)}
        self.turn_keys = {fmt: (columns.get("role", role), columns.get("content", content))
                          for fmt, (role, content) in TURN_KEYS.items()}
        extra = {k.lower(): v for k, v in (roles or {}).items()}
        self.sharegpt_roles = {**SHAREGPT_ROLES, **extra}
        self.message_roles = {**MESSAGE_ROLES, **extra}

    def __getitem__(self, canonical: str) -> str:
        return self.names[canonical]

    def used(self, fmt: InputFormat) -> set[str]:
        return {self.names[c] for c in USED[fmt]}


def column_problems(spec: InputSpec) -> list[str]:
    """Config problems in `columns`/`format`/`roles`, as `path: message` lines for a ConfigError."""
    known = (*CANONICAL, *PREFERENCE_FIELDS) if spec.format in PREFERENCE_FORMATS else CANONICAL
    problems = [f"columns.{k}: unknown field; map one of: {', '.join(known)} (or the turn keys role, content)"
                for k in spec.columns if k not in known and k not in ("role", "content")]
    if spec.format == InputFormat.mapped and not spec.columns:
        problems.append("columns: format 'mapped' needs a mapping, e.g. {instruction: question, output: answer}")
    problems += [f"roles.{k}: unknown role '{v}'; map to one of: {', '.join(CANONICAL_ROLES)}"
                 for k, v in spec.roles.items() if v not in CANONICAL_ROLES]
    return problems


def fast_fields(fmt: InputFormat, names: FieldNames) -> tuple[list[str], list[str]]:
    """(text fields, guard fields) for the readers' vectorized route; none for formats read record by
    record. A guard field holding a value sends a file down the slow route."""
    if fmt in (InputFormat.sharegpt, InputFormat.messages, InputFormat.self_instruct):
        return [], []
    if fmt == InputFormat.text:
        return [names["text"]], []
    guards = [names["history"]]
    texts = [names[c] for c in TEXT_FIELDS]
    if fmt != InputFormat.alpaca:
        guards += [names["messages"], names["conversations"], names["instances"]]
        texts.append(names["text"])
    return texts, guards


def detect(value: dict, names: FieldNames) -> InputFormat:
    if value.get(names["messages"]) is not None:
        return InputFormat.messages
    if value.get(names["conversations"]) is not None:
        return InputFormat.sharegpt
    if value.get(names["instances"]) is not None:
        return InputFormat.self_instruct
    # A `text` field (even a null one) and no instruction or output field at all: a text record. A row
    # with an empty instruction and output in a table that has those columns stays an Alpaca record, so
    # a broken Alpaca row is rejected, never trained on as plain text.
    if names["text"] in value and names["instruction"] not in value and names["output"] not in value:
        return InputFormat.text
    return InputFormat.alpaca


def record_format(value: dict, fmt: InputFormat, names: FieldNames) -> InputFormat:
    return detect(value, names) if fmt in (InputFormat.auto, InputFormat.mapped) else fmt


def unused_fields(value: dict, fmt: InputFormat, names: FieldNames) -> list[str]:
    """The record's top-level fields with a value that format `fmt` (already detected) does not read."""
    used = names.used(fmt)
    return [k for k, v in value.items() if v is not None and k not in used]


def meaning_message(field: str) -> str:
    """Why a field that changes what a record means is refused, and what to do about it."""
    return (f"this source holds {MEANING_FIELDS[field]}, which changes what the record means; the build makes "
            "supervised (SFT) data and would train on every answer alike, the ones marked bad included "
            "(to build preference data, set `task: preference` and a preference `format`). Filter the records yourself, map the answer you want "
            f"with `columns`, or add '{field}' to this input's `ignore_fields` to build it as plain SFT on purpose")


def to_canonical(value: dict, fmt: InputFormat, names: FieldNames, missing: str = "is missing or null",
                 unused: set[str] | None = None) -> list[Canonical | RecordProblem]:
    """One raw record as canonical records: one, or one per instance of a self-instruct seed (an
    instance's problem comes back in its place). Raises RecordProblem for the record as a whole.
    `missing` words an absent value the way the source shows it (CSV: an empty or NaN cell); nested
    fields not read are added to `unused`."""
    unused = set() if unused is None else unused
    fmt = record_format(value, fmt, names)
    if fmt == InputFormat.messages:
        return [conversation(value, names["messages"], *names.turn_keys["messages"], names.message_roles, missing,
                             system_name=names["system"], tools_name=names["tools"], unused=unused)]
    if fmt == InputFormat.sharegpt:
        return [conversation(value, names["conversations"], *names.turn_keys["sharegpt"], names.sharegpt_roles, missing,
                             system_name=names["system"], tools_name=names["tools"], unused=unused)]
    if fmt == InputFormat.self_instruct:
        return _instances(value, names, missing, unused)
    if fmt == InputFormat.text:
        return [Canonical("", [], "", "", _text(value, names["text"], True, missing), kind=KIND_TEXT)]
    instruction = _text(value, names["instruction"], True, missing)
    input_ = _text(value, names["input"], False, missing)
    output = _text(value, names["output"], True, missing)
    system = _text(value, names["system"], False, missing)
    return [Canonical(system, _alpaca_history(value.get(names["history"]), names["history"]), instruction, input_,
                      output)]


def canonical_from_table(frame: pl.DataFrame, fmt: InputFormat, names: FieldNames) -> tuple[pl.DataFrame, InputFormat] | None:
    """The vectorized twin of `to_canonical` for flat Alpaca-like or text tables, or None when the table
    needs the per-record route (conversations, seeds, history, a text column that is not text, or text
    rows mixed with Alpaca rows). Returns the canonical columns plus `missing_field` (the first
    required field that is null, per row), and the format read."""
    if fmt in (InputFormat.sharegpt, InputFormat.messages, InputFormat.self_instruct):
        return None
    cols = set(frame.columns)

    def has_values(canonical: str) -> bool:
        name = names[canonical]
        return name in cols and frame[name].null_count() < frame.height

    def is_text(canonical: str) -> bool:
        return names[canonical] not in cols or frame.schema[names[canonical]] in (pl.String, pl.Null)

    def col(canonical: str) -> pl.Expr:
        name = names[canonical]
        return pl.col(name).cast(pl.String) if name in cols else pl.lit(None, dtype=pl.String)

    auto = fmt in (InputFormat.auto, InputFormat.mapped)
    if fmt == InputFormat.text or (auto and has_values("text") and not has_values("instruction")
                                   and not has_values("output")):
        if any(has_values(c) for c in ("history", "messages", "conversations", "instances")) or not is_text("text"):
            return None
        missing = pl.when(col("text").is_null()).then(pl.lit(names["text"])).otherwise(pl.lit(None, dtype=pl.String))
        return frame.select(
            pl.lit("").alias("system"), pl.lit([], dtype=pl.List(MESSAGE)).alias("history"),
            pl.lit("").alias("instruction"), pl.lit("").alias("input"), col("text").alias("output"),
            pl.lit(KIND_TEXT).alias("kind"), missing.alias("missing_field"),
        ), InputFormat.text
    if has_values("history"):
        return None
    if auto and any(has_values(c) for c in ("messages", "conversations", "instances", "text")):
        return None
    if not all(is_text(c) for c in TEXT_FIELDS):
        return None
    missing = (pl.when(col("instruction").is_null()).then(pl.lit(names["instruction"]))
               .when(col("output").is_null()).then(pl.lit(names["output"]))
               .otherwise(pl.lit(None, dtype=pl.String)))
    return frame.select(
        col("system").fill_null("").alias("system"),
        pl.lit([], dtype=pl.List(MESSAGE)).alias("history"),
        col("instruction").alias("instruction"),
        col("input").fill_null("").alias("input"),
        col("output").alias("output"),
        pl.lit(KIND_SFT).alias("kind"),
        missing.alias("missing_field"),
    ), InputFormat.alpaca


def _instances(value: dict, names: FieldNames, missing: str, unused: set[str]) -> list[Canonical | RecordProblem]:
    instruction = _text(value, names["instruction"], True, missing)
    name = names["instances"]
    instances = value.get(name)
    if not isinstance(instances, list):
        raise RecordProblem("wrong_type", f"expected a list of {{input, output}} instances, got {describe(instances)}",
                            name)
    if not instances:
        raise RecordProblem("missing_field", "holds no instances", name)
    out: list[Canonical | RecordProblem] = []
    for k, instance in enumerate(instances):
        where = f"{name}[{k}]"
        try:
            if not isinstance(instance, dict):
                raise RecordProblem("wrong_type", f"expected an {{input, output}} object, got {describe(instance)}", where)
            unused.update(f"{name}[].{f}" for f, v in instance.items() if f not in ("input", "output") and v is not None)
            out.append(Canonical("", [], instruction, _text(instance, "input", False, missing, where),
                                 _text(instance, "output", True, missing, where)))
        except RecordProblem as problem:
            out.append(problem)
    return out


def _text(value: dict, name: str, required: bool, missing: str, where: str = "") -> str:
    v = value.get(name)
    field = f"{where}.{name}" if where else name
    if v is None:
        if required:
            raise RecordProblem("missing_field", missing, field)
        return ""
    return check_str(v, field)


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
        user, assistant = (check_str(x, f"{where}[{j}]") for j, x in enumerate(pair))
        history += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return history

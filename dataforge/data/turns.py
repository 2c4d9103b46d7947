"""Where each earlier assistant turn lies in a rendered prompt, for `tokenize.train_turns: all`.

A multi-turn record renders as one prompt (system, earlier turns, the last user turn) and one
response (the final answer). To train every assistant turn, the template stage records, per record,
the character spans of the prompt that are assistant turns to train: `assistant_spans`, a flat
[start, end, start, end, ...] list. A span runs from the turn's content to the end of the turn as
the template writes it, so the turn's end (a text template's turn suffix, a chat template's
`<|im_end|>` or `<end_of_turn>`, an eos) is trained: without it a model never learns to stop.

Text templates: a turn renders as its role's `history` format, so the span is the format's text from
`{content}` to its end. Chat templates: the tokenizer's template renders the conversation up to the
turn with a generation prompt, then through the turn; the span is what the turn added. A chat
template that renders an earlier turn differently once later turns follow (some drop earlier
reasoning) cannot be trained this way, and is refused with a ConfigError saying so.

Under `template.think: final_only` a span starts after the turn's opening reasoning block.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from dataforge.config.build import ThinkPolicy, TrainTurns
from dataforge.data.record import ASSISTANT_SPANS, KIND_TEXT, PROMPT, TEMPLATE_VARIANT
from dataforge.data.templates import Template, TemplateKind, _apply_chat, _chat_messages, apply_template
from dataforge.data.think import strip_frame, think_prefix
from dataforge.errors import ConfigError, InternalError


def render_records(records: pl.DataFrame, template: Template, tokenizer: Any, *, seed: int, variants: bool,
                   think: ThinkPolicy, train_turns: TrainTurns) -> pl.DataFrame:
    """The template stage's work: `apply_template` plus the `assistant_spans` column (empty lists
    under `train_turns: last`)."""
    kept = apply_template(records, template, seed=seed, variants=variants, tokenizer=tokenizer, think=think)
    if train_turns is TrainTurns.last:
        return kept.with_columns(pl.Series(ASSISTANT_SPANS, [[]] * kept.height, dtype=pl.List(pl.Int32)))
    rendered = (strip_frame(records) if think is ThinkPolicy.strip else records).with_columns(kept[TEMPLATE_VARIANT])
    return kept.with_columns(assistant_spans(rendered, kept[PROMPT].to_list(), template, tokenizer, think=think))


def assistant_spans(records: pl.DataFrame, prompts: Sequence[str], template: Template, tokenizer: Any, *,
                    think: ThinkPolicy) -> pl.Series:
    """Per record, the flat spans of the trained assistant turns in its prompt ([] for none).

    `records` are the records as rendered (after `think: strip`), `prompts` their rendered prompts."""
    out: list[list[int]] = [[] for _ in range(records.height)]
    has_turns = pl.lit(False)
    for col in ("history", "tool_turns"):
        if col in records.columns:
            has_turns = has_turns | pl.col(col).list.eval(pl.element().struct.field("role") == "assistant").list.any().fill_null(False)
    if "kind" in records.columns:
        has_turns = has_turns & (pl.col("kind").fill_null("") != KIND_TEXT)
    rows = records.with_row_index("_row").filter(has_turns)
    final_only = think is ThinkPolicy.final_only
    for row in rows.iter_rows(named=True):
        i = row["_row"]
        if template.kind is TemplateKind.chat:
            out[i] = _chat_spans(row, prompts[i], template, tokenizer, final_only)
        else:
            out[i] = _text_spans(row, prompts[i], template, final_only)
    return pl.Series(ASSISTANT_SPANS, out, dtype=pl.List(pl.Int32))


def _text_spans(row: Mapping[str, Any], prompt: str, template: Template, final_only: bool) -> list[int]:
    spec = template.spec
    inp = row.get("input") or ""
    header = spec.headers[row.get("template_variant") or 0] if spec.headers else None
    fields = {"instruction": row.get("instruction") or "", "input": inp,
              "system": spec.system.format(system=row["system"]) if row.get("system") and spec.system else "",
              "header": (header.with_input if inp else header.no_input) if header else ""}
    before = ""
    for literal, name, _, _ in string.Formatter().parse(spec.prompt if inp else spec.prompt_no_input):
        before += literal
        if name == "history":
            break
        if name is not None:
            before += fields[name]
    spans, at = [], len(before)
    for turn in row.get("history") or ():
        fmt, content = spec.history[turn["role"]], turn["content"] or ""
        text = fmt.format(content=content)
        if turn["role"] == "assistant":
            lead = next(iter(string.Formatter().parse(fmt)))[0]   # the format's text before {content}
            start = at + len(lead) + (len(think_prefix(content)) if final_only else 0)
            spans += [start, at + len(text)]
        at += len(text)
    history = "".join(spec.history[t["role"]].format(content=t["content"] or "") for t in row.get("history") or ())
    if prompt[len(before):at] != history:
        raise InternalError(f"record {row.get('id')}: the history of template '{template.name}' is not where "
                            "its prompt format puts it")
    return spans


def _chat_spans(row: Mapping[str, Any], prompt: str, template: Template, tokenizer: Any, final_only: bool) -> list[int]:
    messages = _chat_messages(row.get("system") or "", row.get("history") or (), row.get("instruction") or "",
                              row.get("input") or "", row.get("tool_turns") or ())
    tools = row.get("tools") or ""
    spans: list[int] = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _apply_chat(tokenizer, template, [messages[:k]], add_generation_prompt=True, tools=tools)[0]
        through = _apply_chat(tokenizer, template, [messages[:k + 1]], tools=tools)[0]
        if not (through.startswith(before) and prompt.startswith(through)):
            raise ConfigError(
                f"tokenize.train_turns: the chat template of tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' "
                f"renders assistant turn {k} of record {row.get('id')} differently once later turns follow, so "
                "that turn cannot be trained as the model sees it; use tokenize.train_turns: last (or "
                "template.think: strip if the difference is dropped reasoning)")
        start = len(before)
        block = think_prefix(message["content"]).strip() if final_only else ""
        if block:
            found = through.find(block, start)
            if found >= 0:
                start = found + len(block)
                while start < len(through) and through[start].isspace():
                    start += 1
        spans += [start, len(through)]
    return spans

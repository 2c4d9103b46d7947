"""Record text is encoded as text; only the template's own markers become special tokens.

Why: a Hugging Face tokenizer finds its added tokens in a text before it does anything else, so a
record whose output holds the characters `</s>` would be trained with an EOS in the middle of its
answer, and one holding `<|im_start|>` would open a fake turn. The template's markers (a chat
template's `<|im_start|>`, its BOS and EOS) must still become their ids.

How:
* Almost no record holds a special token's text. Their rendered prompt and response are encoded
  whole, as before: every special-token string in them was written by the template.
* The few that do are rendered once more (`marker_spans`) with each special-token string in their
  fields swapped for a sentinel the record cannot contain. The special-token strings left in that
  rendering are the template's markers, and their places in the real rendering follow.
* Such a text is encoded as its runs between markers, each with special tokens split (as text),
  and the markers' ids between them. That is what the tokenizer gives the whole text when it holds
  no literal special-token string: it splits on added tokens before pre-tokenizing, so the runs
  are encoded independently anyway (`lstrip`/`rstrip` markers take the whitespace beside them, as
  the tokenizer does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from dataforge.config.build import ThinkPolicy
from dataforge.data.encode import encode_flat, offsets
from dataforge.data.record import KIND_TEXT, TEMPLATE_VARIANT
from dataforge.data.templates import Template, render
from dataforge.data.think import THINK_PATTERN, move_block, strip_turns, think_prefix
from dataforge.errors import InputError

# Fields a template renders from a record; `history` holds more text in its turns' `content`.
RECORD_TEXT_FIELDS = ("system", "instruction", "input", "output")
_PRIVATE_USE = range(0xE000, 0xF900)

Span = tuple[int, int]   # [start, end) in characters of a rendered text


def special_strings(tokenizer: Any) -> list[str]:
    """The texts of the tokenizer's special tokens, longest first (so `</s>` wins over `<s`-likes)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        found = {t.content for t in backend.get_added_tokens_decoder().values() if t.special and t.content}
    else:
        found = {t for t in getattr(tokenizer, "all_special_tokens", []) if t}
    return sorted(found, key=lambda s: (-len(s), s))


def rows_with_special_text(records: pl.DataFrame, specials: Sequence[str]) -> np.ndarray:
    """Which records hold a special token's text in a field the template renders."""
    if not specials or records.height == 0:
        return np.zeros(records.height, dtype=bool)
    hits = [pl.col(f).fill_null("").str.contains_any(list(specials)) for f in RECORD_TEXT_FIELDS if f in records.columns]
    content = pl.element().struct.field("content").fill_null("")
    for turns in ("history", "tool_turns"):
        if turns in records.columns:
            hits.append(pl.col(turns).list.eval(content.str.contains_any(list(specials))).list.any().fill_null(False))
    if not hits:
        return np.zeros(records.height, dtype=bool)
    return records.select(pl.any_horizontal(hits)).to_series().to_numpy()


def marker_spans(records: pl.DataFrame, template: Template, tokenizer: Any, specials: Sequence[str],
                 prompt_col: str, response_col: str,
                 think: ThinkPolicy = ThinkPolicy.keep) -> list[tuple[list[Span], list[Span]]]:
    """Per record: where the template's own special-token strings lie in its rendered prompt and
    response (rendered with the `think` policy the records were). Raises InputError if the template
    rewrites a field holding a special token's text so that its markers cannot be told from the
    record's text."""
    find = re.compile("|".join(map(re.escape, specials)))
    out = []
    for row in records.iter_rows(named=True):
        history, tool_turns, output = row.get("history") or [], row.get("tool_turns") or [], row.get("output") or ""
        if think is ThinkPolicy.strip:   # applied before hiding: the reasoning tags may be special tokens
            history, tool_turns = strip_turns(history), strip_turns(tool_turns)
            output = re.sub(THINK_PATTERN, "", output, count=1)
        texts = [row.get(f) or "" for f in RECORD_TEXT_FIELDS] + \
            [t.get("content") or "" for t in [*history, *tool_turns]]
        mark = next(chr(c) for c in _PRIVATE_USE if not any(chr(c) in t for t in texts))
        index = {s: i for i, s in enumerate(specials)}

        def hide(text: str, mark: str = mark, index: dict = index) -> str:
            return find.sub(lambda m: f"{mark}{index[m.group()]}{mark}", text)

        if row.get("kind") == KIND_TEXT:  # plain text: no prompt, the text itself is the response
            hidden = ("", hide(row.get("output") or ""))
        else:
            hidden = render(template, hide(row.get("instruction") or ""), hide(row.get("input") or ""),
                            hide(row.get("system") or ""),
                            [{"role": t["role"], "content": hide(t.get("content") or "")} for t in history],
                            output=hide(output), tokenizer=tokenizer,
                            variant=row.get(TEMPLATE_VARIANT) or 0, tools=row.get("tools") or "",
                            tool_turns=[{"role": t["role"], "content": hide(t.get("content") or "")}
                                        for t in tool_turns])
            if think is ThinkPolicy.final_only:
                hidden = move_block(*hidden, hide(think_prefix(output)))
        unhide = re.compile(f"{mark}(\\d+){mark}")
        spans = []
        for text, actual, what in zip(hidden, (row[prompt_col], row[response_col]), ("prompt", "response"), strict=True):
            restored, found = _restore(text, find, unhide, specials)
            if restored != actual:
                raise InputError(f"record {row.get('id')}: a field holds a special token's text and template "
                                 f"'{template.name}' changes it while rendering the {what}, so the template's "
                                 "markers cannot be told from the record's text", file=row.get("origin_file"),
                                 line=row.get("origin_line"))
            spans.append(found)
        out.append((spans[0], spans[1]))
    return out


def _restore(hidden: str, find: re.Pattern, unhide: re.Pattern, specials: Sequence[str]) -> tuple[str, list[Span]]:
    """The real rendering from the sentinel one, and where the markers lie in it."""
    parts, spans, at, pos = [], [], 0, 0
    for m in find.finditer(hidden):
        run = unhide.sub(lambda x: specials[int(x.group(1))], hidden[pos:m.start()])
        parts += [run, m.group()]
        at += len(run)
        spans.append((at, at + len(m.group())))
        at += len(m.group())
        pos = m.end()
    parts.append(unhide.sub(lambda x: specials[int(x.group(1))], hidden[pos:]))
    return "".join(parts), spans


def encode_marked(tokenizer: Any, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) like `encode_flat`: each text's runs between its markers encoded as text,
    each marker as its token id. A marker past a text's end is ignored (texts may be prefixes)."""
    added = _added_tokens(tokenizer)
    runs: list[str] = []
    layout: list[list[int]] = []   # per text: run index (>= 0) or -1 - marker id
    for text, text_spans in zip(texts, spans, strict=True):
        items, pos, strip_next = [], 0, False
        for start, end in text_spans:
            if end > len(text):
                break
            token = added[text[start:end]]
            run = text[pos:start]
            run = run.lstrip() if strip_next else run
            runs.append(run.rstrip() if token.lstrip else run)
            items += [len(runs) - 1, -1 - token.id]
            pos, strip_next = end, token.rstrip
        runs.append(text[pos:].lstrip() if strip_next else text[pos:])
        items.append(len(runs) - 1)
        layout.append(items)
    r_vals, r_len = encode_flat(tokenizer, runs, split_special_tokens=True)
    r_off = offsets(r_len)
    rows = [np.concatenate([r_vals[r_off[i]:r_off[i + 1]] if i >= 0 else np.asarray([-1 - i], dtype=np.int32)
                            for i in items]) for items in layout]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)
    return values, lengths


class _Added(NamedTuple):
    id: int
    lstrip: bool   # the token takes the whitespace before it
    rstrip: bool   # ... and after it


def _added_tokens(tokenizer: Any) -> dict[str, _Added]:
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        return {t.content: _Added(i, bool(t.lstrip), bool(t.rstrip)) for i, t in backend.get_added_tokens_decoder().items()}
    return {t: _Added(int(tokenizer.convert_tokens_to_ids(t)), False, False) for t in tokenizer.all_special_tokens}

"""Tokenizing rendered records into training sequences (padding them into batches: `rows.collate`).

The contract between template and tokenizer is checked here: a sequence is

    [bos, when the tokenizer adds one by default] + enc(prompt) + enc(response) + [eos]

with labels -100 on the bos and prompt tokens (unless `train_on_inputs`), and the EOS always kept
and trained, truncated records included, so the model learns where an answer ends. When a chat
template already writes the bos (or the eos) into the text, it is not added a second time.

Record text is encoded as text: a literal `</s>` in a record stays text, and only the template's
own markers become special tokens (dataforge.data.markers).

Over-length records follow `overlength`: `drop` (rejected with reason `too_long`), `error`
(InputError), or `truncate`, which cuts the prompt's middle first, then the response's end, never
cuts into the instruction and never splits a character (the rule: dataforge.data.truncate). A record
whose instruction would have to go is dropped with reason `prompt_truncated_away`. `counts` holds
how many records were truncated and dropped, in all and per source.

Speed: texts become flat token arrays (dataforge.data.encode: each distinct pre-token encoded once
for byte-level BPE tokenizers, the fast tokenizer's batch call otherwise) and the sequences are
assembled with numpy over them (no Python work per token).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config.build import Overlength, ThinkPolicy, TokenizeConfig, TrainTurns
from dataforge.data.encode import encode_flat, interleave, offsets
from dataforge.data.markers import Span, encode_marked, marker_spans, rows_with_special_text, special_strings
from dataforge.data.record import ASSISTANT_SPANS, PROMPT, RESPONSE, empty_rejects
from dataforge.data.rows import IGNORE_INDEX, collate, gather_ranges  # noqa: F401  (collate: re-exported)
from dataforge.data.stage import make_rejects
from dataforge.data.templates import Template
from dataforge.data.truncate import (
    TAIL_TOKENS,
    Cut,
    end_on_character,
    plan_cuts,
    protected_tokens,
    start_on_character,
)
from dataforge.errors import ConfigError, InputError, InternalError

COUNT_KEYS = ("truncated", "dropped", "prompt_truncated_away")


@dataclass
class TokenizeResult:
    table: pa.Table          # input_ids, attention_mask, labels (unpadded lists), source, id
    rejected: pl.DataFrame = field(default_factory=empty_rejects)   # stage "tokenize": too_long, prompt_truncated_away
    # truncated / dropped (too_long) / prompt_truncated_away, in all and under "by_source".
    counts: dict[str, Any] = field(default_factory=lambda: {**dict.fromkeys(COUNT_KEYS, 0), "by_source": {}})
    routes: dict[str, int] = field(default_factory=dict)   # texts encoded piecewise / by the tokenizer / around markers / by turns

    @property
    def lengths(self) -> np.ndarray:
        return list_lengths(self.table.column("input_ids"))


def tokenize_records(records: pl.DataFrame, tokenizer: Any, cfg: TokenizeConfig,
                     progress: Callable[[int], None] | None = None, *, template: Template | None = None,
                     think: ThinkPolicy = ThinkPolicy.keep) -> TokenizeResult:
    """Token ids and loss labels for every record with `prompt` and `response` columns.

    `template` (and the `think` policy) are what rendered them; they are needed only when a record's
    fields hold a special token's text (to tell the template's markers from that text).
    `progress`, if given, is called with the number of records encoded after each chunk.
    """
    for col in (PROMPT, RESPONSE, "id"):
        if col not in records.columns:
            raise InternalError(f"tokenize needs a '{col}' column; the template stage adds it")
    eos_id, eos_text = tokenizer.eos_token_id, tokenizer.eos_token
    if eos_id is None:
        raise ConfigError(f"tokenize.tokenizer: tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' has no "
                          "eos token, so responses cannot be ended")
    marked = _marked_rows(records, tokenizer, template, think)
    responses = records.select(
        pl.when(pl.col(RESPONSE).str.strip_chars_end().str.ends_with(eos_text))
        .then(pl.col(RESPONSE).str.strip_chars_end()).otherwise(pl.col(RESPONSE))
    ).to_series()
    if marked:   # strip after the final EOS only when the template wrote it
        texts = responses.to_list()
        for i, (_, spans) in marked.items():
            full = records[RESPONSE][i]
            ends_on_eos = bool(spans) and full[spans[-1][0]:spans[-1][1]] == eos_text and not full[spans[-1][1]:].strip()
            texts[i] = full[:spans[-1][1]] if ends_on_eos else full
        responses = pl.Series(RESPONSE, texts, dtype=pl.Utf8)
    routes: dict[str, int] = {}
    turns = _turns(records) if cfg.train_turns is TrainTurns.all else {}
    p_vals, p_len, p_train = _encode_prompts(tokenizer, records[PROMPT], turns, {i: s[0] for i, s in marked.items()},
                                             progress, routes)
    r_vals, r_len = _encode(tokenizer, responses, {i: s[1] for i, s in marked.items()}, progress, routes)
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int32)
    p_off, r_off = offsets(p_len), offsets(r_len)

    # Per record: add the prefix unless the prompt already starts with it, add eos unless the
    # response already ends with it.
    pre = np.where(_starts_with(p_vals, p_off, p_len, prefix), 0, len(prefix)) if len(prefix) else np.zeros_like(p_len)
    last = np.where(r_len > 0, r_vals[np.maximum(r_off[1:] - 1, 0)] if len(r_vals) else -1, -1)
    # A response that ends with the eos (a chat template whose turn end is the eos, like ChatML's
    # <|im_end|>) is measured without it and gets the one eos every sequence ends with: the same ids,
    # and a cut response keeps its end too.
    r_len = r_len - (last == eos_id)
    add_eos = np.ones_like(r_len)
    total = pre + p_len + r_len + add_eos
    over = total > cfg.max_length
    available = cfg.max_length - pre - add_eos

    rejected = [empty_rejects()]
    keep = np.ones(len(total), dtype=bool)
    protected = np.zeros_like(p_len)
    if over.any():
        if cfg.overlength is Overlength.error:
            i = int(np.argmax(over))
            row = records.row(i, named=True)
            raise InputError(f"record {row['id']}: {_too_long(total[i], p_len[i], r_len[i], cfg.max_length)} "
                             "(tokenize.overlength is 'error')",
                             file=row.get("origin_file"), line=row.get("origin_line"))
        if cfg.overlength is Overlength.drop:
            keep = ~over
            details = [_too_long(t, p, r, cfg.max_length) for t, p, r in zip(total[over], p_len[over], r_len[over], strict=True)]
            rejected.append(make_rejects(records.filter(pl.Series(over)), "tokenize", "too_long",
                                         pl.Series(details, dtype=pl.Utf8)))
        else:
            protected[over] = _protected(tokenizer, records, over, marked, cfg.keep_instruction_tokens, turns)

    cut = plan_cuts(p_len, r_len, available, over & keep, protected)
    if cut.lost.any():
        keep &= ~cut.lost
        details = [_instruction_lost(h, p, r, cfg) for h, p, r in
                   zip(cut.protected[cut.lost], p_len[cut.lost], r_len[cut.lost], strict=True)]
        rejected.append(make_rejects(records.filter(pl.Series(cut.lost)), "tokenize", "prompt_truncated_away",
                                     pl.Series(details, dtype=pl.Utf8)))
    truncated = over & keep
    # Only text beyond ASCII has characters of several bytes that a cut could split.
    wide = [(col.str.len_bytes() != col.str.len_chars()).fill_null(False).to_numpy() for col in (records[PROMPT], responses)]
    head, tail, r_keep = _on_characters(tokenizer, p_vals, p_off, r_vals, r_off, cut, truncated, *wide)

    seg_starts = np.stack([
        np.zeros_like(p_len),                                      # special prefix
        len(prefix) + p_off[:-1],                                  # prompt head
        len(prefix) + p_off[1:] - tail,                            # prompt tail
        len(prefix) + len(p_vals) + r_off[:-1],                    # response start
        np.full_like(p_len, len(prefix) + len(p_vals) + len(r_vals)),  # eos
    ], axis=1)[keep]
    seg_lens = np.stack([pre, head, tail, r_keep, add_eos], axis=1)[keep]
    trained = np.array([False, cfg.train_on_inputs, cfg.train_on_inputs, True, True])

    source = np.concatenate([prefix, p_vals, r_vals, np.asarray([eos_id], dtype=np.int32)])
    # Tokens of earlier assistant turns (train_turns: all) are trained. A cut never reaches them: it
    # keeps the prompt through the instruction, which comes after every earlier turn.
    source_trained = np.concatenate([np.zeros(len(prefix), dtype=bool), p_train,
                                     np.zeros(len(r_vals) + 1, dtype=bool)])
    index = gather_ranges(seg_starts.ravel(), seg_lens.ravel())
    ids = source[index]
    mask = np.repeat(np.broadcast_to(trained, seg_lens.shape).ravel(), seg_lens.ravel()) | source_trained[index]
    labels = np.where(mask, ids, IGNORE_INDEX).astype(np.int32)
    out_off = offsets(seg_lens.sum(axis=1))
    # The first token is never a prediction target (the model shifts labels left); forcing it here
    # keeps that true when records are packed after one another.
    labels[out_off[:-1][out_off[:-1] < len(labels)]] = IGNORE_INDEX

    kept = records.filter(pl.Series(keep))
    table = pa.table({
        "input_ids": _list_array(out_off, ids),
        "attention_mask": _list_array(out_off, np.ones(len(ids), dtype=np.int8)),
        "labels": _list_array(out_off, labels),
        "source": pa.array(kept["source"].to_list() if "source" in kept.columns else [None] * kept.height,
                           type=pa.string()),
        "id": pa.array(kept["id"].to_list(), type=pa.string()),
    })
    counts = _counts(records, {"truncated": truncated, "dropped": over & ~keep & ~cut.lost,
                               "prompt_truncated_away": cut.lost})
    return TokenizeResult(table=table, rejected=pl.concat(rejected), counts=counts, routes=routes)


def _marked_rows(records: pl.DataFrame, tokenizer: Any, template: Template | None,
                 think: ThinkPolicy) -> dict[int, tuple[list[Span], list[Span]]]:
    """Row -> (prompt, response) marker spans, for the records whose fields hold a special token's text."""
    specials = special_strings(tokenizer)
    rows = np.flatnonzero(rows_with_special_text(records, specials))
    if not len(rows):
        return {}
    if template is None:
        raise ValueError(f"record {records['id'][int(rows[0])]} holds a special token's text; pass the template "
                         "that rendered the records so that it is encoded as text")
    spans = marker_spans(records[rows], template, tokenizer, specials, PROMPT, RESPONSE, think=think)
    return dict(zip(rows.tolist(), spans, strict=True))


def _encode(tokenizer: Any, texts: pl.Series | Sequence[str], marked: Mapping[int, list[Span]],
            progress: Callable[[int], None] | None = None, routes: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """encode_flat, except that the texts at the positions in `marked` are encoded around their markers."""
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.Utf8)
    if not marked:
        return encode_flat(tokenizer, series, progress, routes)
    at = np.fromiter(marked, dtype=np.int64, count=len(marked))
    plain = np.setdiff1d(np.arange(len(series)), at)
    parts = [(plain, *encode_flat(tokenizer, series.gather(plain), progress, routes))]
    parts.append((at, *encode_marked(tokenizer, series.gather(at).to_list(), [marked[int(i)] for i in at])))
    if routes is not None:
        routes["around_markers"] = routes.get("around_markers", 0) + len(at)
    if progress is not None:
        progress(len(at))
    return interleave(len(series), parts)


def _protected(tokenizer: Any, records: pl.DataFrame, over: np.ndarray, marked: Mapping[int, tuple[list[Span], list[Span]]],
               keep: int | None, turns: Mapping[int, list[int]]) -> np.ndarray:
    """Prompt tokens through the instruction (or its first `keep` tokens), for the `over` records
    (prompts cut into turns are measured piece by piece, as they are encoded)."""
    rows = np.flatnonzero(over)
    instructions = records["instruction"].gather(rows).to_list() if "instruction" in records.columns else [""] * len(rows)
    spans = {j: marked[int(i)][0] for j, i in enumerate(rows) if int(i) in marked}
    if not any(int(i) in turns for i in rows):
        return protected_tokens(records[PROMPT].gather(rows).to_list(), instructions, keep,
                                lambda texts: _encode(tokenizer, texts, spans)[1])
    cuts = [turns.get(int(i), []) for i in rows]
    marks = [spans.get(j, []) for j in range(len(rows))]
    return protected_tokens(records[PROMPT].gather(rows).to_list(), instructions, keep,
                            lambda texts: _encode_split(tokenizer, texts, cuts, marks)[1])


def _turns(records: pl.DataFrame) -> dict[int, list[int]]:
    """Row -> its flat assistant spans, for the rows that have any."""
    if ASSISTANT_SPANS not in records.columns:
        return {}
    col = records[ASSISTANT_SPANS]
    rows = np.flatnonzero((col.list.len().fill_null(0) > 0).to_numpy())
    return dict(zip(rows.tolist(), col.gather(rows).to_list(), strict=True))


def _encode_prompts(tokenizer: Any, prompts: pl.Series, turns: Mapping[int, list[int]], marked: Mapping[int, list[Span]],
                    progress: Callable[[int], None] | None, routes: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, lengths, trained) like `_encode`, where a prompt with assistant spans (`turns`) is cut at
    the spans' edges and encoded piece by piece, as a prompt and its response are, and `trained`
    flags the tokens of those spans."""
    rows = np.asarray(sorted(turns), dtype=np.int64)
    if not len(rows):
        values, lengths = _encode(tokenizer, prompts, marked, progress, routes)
        return values, lengths, np.zeros(len(values), dtype=bool)
    plain = np.setdiff1d(np.arange(len(prompts)), rows)
    plain_marked = {j: marked[int(i)] for j, i in enumerate(plain) if int(i) in marked}
    pv, pn = _encode(tokenizer, prompts.gather(plain), plain_marked, progress, routes)
    texts = prompts.gather(rows).to_list()
    tv, tn, tt = _encode_split(tokenizer, texts, [turns[int(i)] for i in rows], [marked.get(int(i), []) for i in rows])
    routes["by_turns"] = routes.get("by_turns", 0) + len(rows)
    if progress is not None:
        progress(len(rows))
    values, lengths = interleave(len(prompts), [(plain, pv, pn), (rows, tv, tn)])
    trained, _ = interleave(len(prompts), [(plain, np.zeros(len(pv), dtype=np.int32), pn), (rows, tt.astype(np.int32), tn)])
    return values, lengths, trained.astype(bool)


def _encode_split(tokenizer: Any, texts: Sequence[str], cuts: Sequence[Sequence[int]],
                  marks: Sequence[Sequence[Span]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each text cut at its `cuts` (flat [start, end, ...] spans; those past a text's end are left out),
    its pieces encoded apart: (values, lengths per text, trained per token: inside a span)."""
    pieces: list[str] = []
    owner: list[int] = []
    inside: list[bool] = []
    piece_marks: dict[int, list[Span]] = {}
    for t, (text, cut, mark) in enumerate(zip(texts, cuts, marks, strict=True)):
        bounds = [0, *[c for c in cut if c < len(text)], len(text)]
        for j in range(len(bounds) - 1):
            a, b = bounds[j], bounds[j + 1]
            at = [(s - a, e - a) for s, e in mark if a <= s and e <= b]
            if at:
                piece_marks[len(pieces)] = at
            pieces.append(text[a:b])
            owner.append(t)
            inside.append(j % 2 == 1)
    values, piece_len = _encode(tokenizer, pieces, piece_marks)
    lengths = np.bincount(np.asarray(owner, dtype=np.int64), weights=piece_len, minlength=len(texts)).astype(np.int64)
    return values, lengths, np.repeat(np.asarray(inside, dtype=bool), piece_len)


def _on_characters(tokenizer: Any, p_vals: np.ndarray, p_off: np.ndarray, r_vals: np.ndarray, r_off: np.ndarray,
                   cut: Cut, truncated: np.ndarray, wide_prompt: np.ndarray,
                   wide_response: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cut's head, tail and response lengths, moved so that no kept range splits a character."""
    head, tail, r_keep = cut.head.copy(), cut.tail.copy(), cut.response.copy()
    rows = np.flatnonzero(truncated & wide_response & (cut.response < np.diff(r_off)))
    r_keep[rows] = end_on_character(tokenizer, r_vals, r_off[rows], r_keep[rows])
    rows = np.flatnonzero(truncated & wide_prompt & (cut.tail > 0))
    head[rows] = end_on_character(tokenizer, p_vals, p_off[rows], head[rows])
    tail[rows] = start_on_character(tokenizer, p_vals, p_off[rows + 1], tail[rows])
    return head, tail, r_keep


def _counts(records: pl.DataFrame, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    counts: dict[str, Any] = {k: int(m.sum()) for k, m in masks.items()}
    by_source: dict[str, dict[str, int]] = {}
    if "source" in records.columns and any(counts.values()):
        frame = pl.DataFrame({"source": records["source"], **{k: pl.Series(m) for k, m in masks.items()}})
        for row in frame.group_by("source").sum().sort("source").iter_rows(named=True):
            if any(row[k] for k in masks):
                by_source[row["source"]] = {k: int(row[k]) for k in masks}
    counts["by_source"] = by_source
    return counts


def _instruction_lost(protected: int, prompt: int, response: int, cfg: TokenizeConfig) -> str:
    what = ("the whole instruction" if cfg.keep_instruction_tokens is None
            else f"the first {cfg.keep_instruction_tokens} instruction tokens")
    return (f"keeping {what} takes {int(protected)} of the prompt's {int(prompt)} tokens (+{TAIL_TOKENS} for "
            f"the answer cue), which leaves too little of max_length {cfg.max_length} for the response's "
            f"{int(response)} tokens; a smaller tokenize.keep_instruction_tokens keeps such records")


def _too_long(total: int, prompt: int, response: int, max_length: int) -> str:
    return f"{int(total)} tokens > max_length {max_length} (prompt {int(prompt)}, response {int(response)})"


def special_prefix(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before a text by default (usually [bos] or nothing)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return list(full[:k])
    return []


def _starts_with(values: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    if len(values) == 0:
        return np.zeros(len(lengths), dtype=bool)
    idx = np.minimum(offsets[:-1, None] + np.arange(len(prefix)), len(values) - 1)
    return (lengths >= len(prefix)) & (values[idx] == prefix).all(axis=1)


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(values))
    return pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), pa.array(values))


def list_lengths(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def length_stats(lengths: Sequence[int] | np.ndarray) -> dict[str, float | int | None]:
    """min / median / p95 / max / mean token lengths (linear-interpolated percentiles) for the manifest."""
    a = np.asarray(lengths, dtype=np.float64)
    if a.size == 0:
        return {"min": None, "p50": None, "p95": None, "max": None, "mean": None, "n": 0}
    return {"min": int(a.min()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": int(a.max()), "mean": float(a.mean()), "n": int(a.size)}

"""Tokenizing rendered records into training sequences (padding them into batches: `rows.collate`).

The contract between template and tokenizer is checked here: a sequence is

    [bos, when the tokenizer adds one by default] + enc(prompt) + enc(response) + [eos]

with labels -100 on the bos and prompt tokens (unless `train_on_inputs`), and the EOS always kept
and trained, truncated records included, so the model learns where an answer ends. When a chat
template already writes the bos (or the eos) into the text, it is not added a second time.

Over-length records follow `overlength`: `drop` (rejected with reason `too_long`), `error`
(InputError), or `truncate`, which cuts the prompt first, then the response:

* the prompt is cut in the middle: its first half and last half of the kept budget survive, so the
  template's opening (system message, header, start of the instruction) and its answer cue (e.g.
  `### Response:` or the chat template's assistant header) both stay, and the cut falls inside the
  long part, usually the input;
* the prompt keeps at least `MIN_PROMPT_TOKENS` tokens (or half the budget, or all of it, if less);
* the response keeps its start; the total is then exactly `max_length`, EOS included.

Speed: texts become flat token arrays (dataforge.data.encode: each distinct pre-token encoded once
for byte-level BPE tokenizers, the fast tokenizer's batch call otherwise) and the sequences are
assembled with numpy over them (no Python work per token).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config.build import Overlength, TokenizeConfig
from dataforge.data.encode import encode_flat, offsets
from dataforge.data.record import PROMPT, RESPONSE, empty_rejects
from dataforge.data.rows import IGNORE_INDEX, collate, gather_ranges  # noqa: F401  (collate: re-exported)
from dataforge.data.stage import make_rejects
from dataforge.errors import ConfigError, InputError

MIN_PROMPT_TOKENS = 16


@dataclass
class TokenizeResult:
    table: pa.Table          # input_ids, attention_mask, labels (unpadded lists), source, id
    rejected: pl.DataFrame = field(default_factory=empty_rejects)   # stage "tokenize", reason "too_long"
    counts: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "truncated": 0})
    routes: dict[str, int] = field(default_factory=dict)   # texts encoded piecewise / by the tokenizer

    @property
    def lengths(self) -> np.ndarray:
        return list_lengths(self.table.column("input_ids"))


def tokenize_records(records: pl.DataFrame, tokenizer: Any, cfg: TokenizeConfig,
                     progress: Callable[[int], None] | None = None) -> TokenizeResult:
    """Token ids and loss labels for every record with `prompt` and `response` columns.

    `progress`, if given, is called with the number of records encoded after each chunk.
    """
    for col in (PROMPT, RESPONSE, "id"):
        if col not in records.columns:
            raise ValueError(f"tokenize needs a '{col}' column; run the template stage first")
    eos_id, eos_text = tokenizer.eos_token_id, tokenizer.eos_token
    if eos_id is None:
        raise ConfigError(f"tokenize.tokenizer: tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' has no "
                          "eos token, so responses cannot be ended")
    responses = records.select(
        pl.when(pl.col(RESPONSE).str.strip_chars_end().str.ends_with(eos_text))
        .then(pl.col(RESPONSE).str.strip_chars_end()).otherwise(pl.col(RESPONSE))
    ).to_series()
    routes: dict[str, int] = {}
    p_vals, p_len = encode_flat(tokenizer, records[PROMPT], progress, routes)
    r_vals, r_len = encode_flat(tokenizer, responses, progress, routes)
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int32)
    p_off, r_off = offsets(p_len), offsets(r_len)

    # Per record: add the prefix unless the prompt already starts with it, add eos unless the
    # response already ends with it.
    pre = np.where(_starts_with(p_vals, p_off, p_len, prefix), 0, len(prefix)) if len(prefix) else np.zeros_like(p_len)
    last = np.where(r_len > 0, r_vals[np.maximum(r_off[1:] - 1, 0)] if len(r_vals) else -1, -1)
    add_eos = (last != eos_id).astype(np.int64)
    total = pre + p_len + r_len + add_eos
    over = total > cfg.max_length

    counts = {"dropped": 0, "truncated": 0}
    rejected = empty_rejects()
    keep = np.ones(len(total), dtype=bool)
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
            rejected = make_rejects(records.filter(pl.Series(over)), "tokenize", "too_long",
                                    pl.Series(details, dtype=pl.Utf8))
            counts["dropped"] = int(over.sum())
        else:
            counts["truncated"] = int(over.sum())

    head, tail, r_keep = _budget(p_len, r_len, cfg.max_length - pre - add_eos, over)
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
    ids = source[gather_ranges(seg_starts.ravel(), seg_lens.ravel())]
    mask = np.repeat(np.broadcast_to(trained, seg_lens.shape).ravel(), seg_lens.ravel())
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
    return TokenizeResult(table=table, rejected=rejected, counts=counts, routes=routes)


def _too_long(total: int, prompt: int, response: int, max_length: int) -> str:
    return f"{int(total)} tokens > max_length {max_length} (prompt {int(prompt)}, response {int(response)})"


def _budget(p_len: np.ndarray, r_len: np.ndarray, available: np.ndarray,
            over: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt head, prompt tail and response tokens kept per record (see the module docstring)."""
    min_keep = np.minimum(np.minimum(p_len, MIN_PROMPT_TOKENS), available // 2)
    p_keep = np.where(over, np.clip(available - r_len, min_keep, p_len), p_len)
    r_keep = np.where(over, available - p_keep, r_len)
    tail = np.where(over, p_keep // 2, 0)
    return p_keep - tail, tail, r_keep


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

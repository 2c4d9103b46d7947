"""Texts to token ids as flat arrays, with an exact fast path for byte-level BPE tokenizers.

Why a fast path: tokenizing is most of a build's time, and almost all of it is spent inside the
Rust tokenizer building per-token objects for words it has already seen thousands of times. A BPE
tokenizer encodes every pre-token ("piece") on its own, so a text's ids are the concatenation of its
pieces' ids, and a dataset has few distinct pieces (tens of thousands in millions of texts). So the
fast path splits all texts into pieces with polars (Rust regex, vectorized), encodes each distinct
piece once with the tokenizer itself, and gathers the ids with numpy.

Why it is exact, not approximately so:

* The split uses a *coarsening* of the tokenizer's own pattern: every coarse piece is a run of
  consecutive pieces of the tokenizer's pattern, and the tokenizer splits it alone exactly as it
  splits it in context. The tokenizer's pattern cannot be run by polars because it looks ahead
  (`\\s+(?!\\S)`: a run of whitespace leaves its last character to the next piece); the coarse pattern
  instead keeps a whitespace run together with the piece that follows it, which is all the look-ahead
  ever decides. Supported: GPT-2-style byte-level tokenizers (GPT2_COARSE), and the Llama-3 and
  Qwen2 split patterns (SPLIT_COARSE).
* Each distinct coarse piece is encoded by the tokenizer's full pipeline (normalizer, pre-tokenizer,
  BPE with its merges and cache), so vocabulary and merge rules are never re-implemented.
* Only texts the argument covers take the fast path: printable ASCII plus tab, newline and carriage
  return (no Unicode-version differences between regex engines, NFC is the identity), and no text of
  an added token the tokenizer would split out before pre-tokenizing (with `split_special_tokens`,
  special tokens are not split out, so only the other added tokens count). Other texts, and
  tokenizers whose pre-tokenizer is not a supported pattern, go through the tokenizer's batch call.

tests/data/test_encode.py compares both paths with the tokenizer on adversarial text.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
from tokenizers import models, normalizers

from dataforge.data.rows import gather_ranges

ENCODE_CHUNK = 65536   # texts per chunk: bounds memory, paces the progress bar

_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
_RUN = r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+"
# The GPT-2 byte-level pattern is
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# Where its first six alternatives match, this pattern matches the same. Where they fail (a run W
# of two or more whitespace characters, or one that is not a space), the tokenizer emits W minus its
# last character, then that character joined to the run after it if it is a space, else alone, then
# that run (contraction first). The last two alternatives take W together with that run, so the
# coarse piece ends where the tokenizer's next piece ends and nothing after it depends on W.
GPT2_COARSE = (rf"{_CONTRACTIONS}| ?\p{{L}}+| ?\p{{N}}+| ?[^\s\p{{L}}\p{{N}}]+"
               rf"|\s*\x20(?:{_RUN})"
               rf"|\s+(?:{_CONTRACTIONS}|{_RUN})?")

# Llama-3 and Qwen2 split with
#   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|NUM| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
# where NUM is \p{N}{1,3} (Llama-3) or \p{N} (Qwen2). Its first five alternatives (HEAD) match the
# same here. They fail only at a run W of spaces and tabs (no line break) that they cannot join to
# what follows; the tokenizer then emits W minus its last character x, then x with the letters after
# it, or a space x with the punctuation after it, or x alone followed by HEAD's next match. The added
# alternatives take W with that continuation, or W alone at the end of the text.
_L3_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_L3_NUMBERS = (r"\p{N}{1,3}", r"\p{N}")


def _l3_pattern(num: str) -> str:
    return rf"{_L3_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{num}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _l3_coarse(num: str) -> str:
    head = rf"{_L3_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{num}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+"
    after = rf"{_L3_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{num}|[^\s\p{{L}}\p{{N}}]+[\r\n]*"
    return (rf"{head}|[^\S\r\n]+\p{{L}}+|[^\S\r\n]*\x20[^\s\p{{L}}\p{{N}}]+[\r\n]*"
            rf"|[^\S\r\n]+(?:{after})|[^\S\r\n]+")


SPLIT_COARSE = {_l3_pattern(num): _l3_coarse(num) for num in _L3_NUMBERS}

# Texts every regex engine classifies alike: printable ASCII, tab, newline, carriage return.
SAFE_TEXT = r"^[\x20-\x7E\t\n\r]*$"


def coarse_pattern(backend: Any) -> str | None:
    """The coarse split pattern for this Rust tokenizer, or None when the fast path does not apply."""
    # The components' own state, not backend.to_str(): that would serialize the whole vocabulary.
    if not isinstance(backend.model, models.BPE) or backend.model.dropout:
        return None
    if backend.normalizer is not None and not isinstance(backend.normalizer, normalizers.NFC):
        return None
    pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", True):
        return GPT2_COARSE
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2:
        split, byte_level = steps
        if (split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert")
                and byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex", True)
                and not byte_level.get("add_prefix_space", True)):
            return SPLIT_COARSE.get((split.get("pattern") or {}).get("Regex"))
    return None


def encode_flat(tokenizer: Any, texts: Sequence[str] | pl.Series, progress: Callable[[int], None] | None = None,
                routes: dict[str, int] | None = None, *,
                split_special_tokens: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All texts' token ids (no special tokens added) as one flat int32 array plus per-text lengths.

    Equal to `tokenizer(texts, add_special_tokens=False, split_special_tokens=...)["input_ids"]`,
    flattened. `split_special_tokens=True` encodes a special token's text as text (a record's literal
    `</s>` stays four characters of text); None keeps the tokenizer's own setting.
    `progress`, if given, is called with the number of texts encoded after each chunk; `routes`, if
    given, gets how many texts took each path added under "piecewise" and "tokenizer".
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    split = bool(getattr(tokenizer, "split_special_tokens", False)) if split_special_tokens is None else split_special_tokens
    if backend is None:
        return _encode_chunks(tokenizer, None, texts, progress, routes, split)
    backend.no_truncation()
    backend.no_padding()
    # The flag lives on the shared Rust tokenizer: set it for this call only.
    before, backend.encode_special_tokens = backend.encode_special_tokens, split
    try:
        return _encode_chunks(tokenizer, backend, texts, progress, routes, split)
    finally:
        backend.encode_special_tokens = before


def _encode_chunks(tokenizer: Any, backend: Any, texts: Sequence[str] | pl.Series,
                   progress: Callable[[int], None] | None, routes: dict[str, int] | None,
                   split: bool) -> tuple[np.ndarray, np.ndarray]:
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.Utf8)
    pattern = coarse_pattern(backend) if backend is not None else None
    safe = _safe_mask(series, backend, split) if pattern else np.zeros(len(series), dtype=bool)
    if routes is not None:
        routes["piecewise"] = routes.get("piecewise", 0) + int(safe.sum())
        routes["tokenizer"] = routes.get("tokenizer", 0) + int(len(safe) - safe.sum())
    values, lengths = [], []
    for start in range(0, len(series), ENCODE_CHUNK):
        chunk, chunk_safe = series.slice(start, ENCODE_CHUNK), safe[start:start + ENCODE_CHUNK]
        fast = np.flatnonzero(chunk_safe)
        slow = np.flatnonzero(~chunk_safe)
        parts = []
        if len(fast):
            parts.append((fast, *encode_pieces(backend, pattern, chunk.gather(fast))))
        if len(slow):
            parts.append((slow, *_encode_batch(tokenizer, backend, chunk.gather(slow).to_list(), split)))
        v, n = interleave(len(chunk), parts)
        values.append(v)
        lengths.append(n)
        if progress is not None:
            progress(len(chunk))
    if not values:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return np.concatenate(values), np.concatenate(lengths)


def encode_pieces(backend: Any, pattern: str, texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) for safe texts: split by `pattern`, each distinct piece encoded once."""
    # The streaming engine splits the texts across cores; the regex is most of the work here.
    lists = pl.LazyFrame({"p": texts}).select(pl.col("p").str.extract_all(pattern)).collect(engine="streaming")["p"]
    pieces = lists.explode().drop_nulls()
    distinct = pieces.unique()
    d_vals, d_len = _backend_encode(backend, distinct.to_list())
    code = pieces.cast(pl.Enum(distinct)).to_physical().to_numpy()
    piece_len = d_len[code]
    values = d_vals[gather_ranges(offsets(d_len)[:-1][code], piece_len)]
    tokens_before = offsets(piece_len)[offsets(lists.list.len().fill_null(0).to_numpy())]
    return values, np.diff(tokens_before)


def _safe_mask(texts: pl.Series, backend: Any, split: bool) -> np.ndarray:
    safe = texts.str.contains(SAFE_TEXT)
    added = [t.content for t in backend.get_added_tokens_decoder().values() if t.content and not (split and t.special)]
    if added:
        safe = safe & ~texts.str.contains_any(added)
    return safe.fill_null(False).to_numpy()


def _encode_batch(tokenizer: Any, backend: Any, texts: list[str], split: bool) -> tuple[np.ndarray, np.ndarray]:
    if backend is None:
        return _flatten(tokenizer(texts, add_special_tokens=False, split_special_tokens=split)["input_ids"])
    return _backend_encode(backend, texts)


def _backend_encode(backend: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # encode_batch_fast (tokenizers >= 0.20) skips computing offsets, which are not needed here.
    encode_batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    return _flatten([e.ids for e in encode_batch(texts, add_special_tokens=False)])


def _flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return values, lengths


def interleave(n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Put each part's (positions, values, lengths) back in text order."""
    if len(parts) == 1:   # one path took every text: already in order
        return parts[0][1], parts[0][2]
    lengths = np.zeros(n, dtype=np.int64)
    for pos, _, part_len in parts:
        lengths[pos] = part_len
    off = offsets(lengths)
    values = np.empty(int(off[-1]), dtype=np.int32)
    for pos, part_vals, part_len in parts:
        values[gather_ranges(off[:-1][pos], part_len)] = part_vals
    return values, lengths


def offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

"""Word tokens and hashed word n-grams, shared by near-dedupe (shingles) and decontamination.

Both stages must agree on what a "word" is, so the rule lives here once:

* the text is lowercased, then split into runs of letters and digits (Unicode `\\w` without the
  underscore); punctuation, symbols and whitespace only separate words and are dropped, so
  "Hello, world!" and "hello world" give the same tokens;
* Han ideographs and kana are one token per character, because those scripts do not separate words
  with spaces and a whole sentence would otherwise be a single "word".

Each distinct token is hashed once with xxh3_64; an n-gram's hash combines its tokens' hashes in
numpy (an order-sensitive polynomial finished by the splitmix64 mixer), so hashing 70 M n-grams costs
a few vectorized passes instead of 70 M Python calls.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xxhash

TOKEN_PATTERN = r"[\p{Han}\p{Hiragana}\p{Katakana}]|[\w--\p{Han}--\p{Hiragana}--\p{Katakana}--_]+"

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd constant of the order-sensitive combine
_SM1 = np.uint64(0xBF58476D1CE4E5B9)
_SM2 = np.uint64(0x94D049BB133111EB)


def tokenize(texts: pl.Series) -> pl.Series:
    """Lowercased word tokens of each text, as a list column (nulls become empty lists)."""
    return texts.fill_null("").str.to_lowercase().str.extract_all(TOKEN_PATTERN)


def token_hashes(tokens: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(xxh3_64 of every token, flattened in text order; token count of each text)."""
    counts = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    words = tokens.explode().drop_nulls()
    if words.len() == 0:
        return np.zeros(0, np.uint64), counts
    distinct = words.unique()
    codes = np.fromiter((xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in distinct.to_list()),
                        dtype=np.uint64, count=distinct.len())
    table = pl.DataFrame({"w": distinct, "h": pl.Series(codes, dtype=pl.UInt64)})
    hashed = words.to_frame("w").join(table, on="w", how="left", maintain_order="left")
    return hashed.get_column("h").to_numpy(), counts


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the whole word (wrapping uint64 math)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _SM1
    x = x ^ (x >> np.uint64(27))
    x = x * _SM2
    return x ^ (x >> np.uint64(31))


def window_hashes(hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash every run of `n` consecutive tokens inside each text.

    Returns (window hash uint64, owning text index, start token position within the text), ordered
    by text then position. A text with 1..n-1 tokens yields one window over all its tokens (its
    whole text); an empty text yields none. Windows never cross from one text into the next.
    """
    total = int(counts.sum())
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    windows = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    n_win = int(windows.sum())
    if n_win == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), windows)
    pos = np.arange(n_win, dtype=np.int64) - np.repeat(np.cumsum(windows) - windows, windows)
    first = starts[owner] + pos
    width = np.minimum(counts[owner], n)
    with np.errstate(over="ignore"):
        h = _combine(hashes, total, n)[np.minimum(first, max(total - n, 0))]
        for w in np.unique(width[width < n]):  # texts shorter than n: one window over the whole text
            rows = np.flatnonzero(width == w)
            h[rows] = _combine_at(hashes, first[rows], int(w))
        h = mix64(h + width.astype(np.uint64))
    return h, owner, pos


def _combine(hashes: np.ndarray, total: int, n: int) -> np.ndarray:
    """Order-sensitive polynomial of the n token hashes starting at every position < total - n + 1."""
    if total < n:
        return np.zeros(1, np.uint64)
    h = hashes[:total - n + 1].copy()
    for t in range(1, n):
        h *= _MULT
        h += hashes[t:total - n + 1 + t]
    return h


def _combine_at(hashes: np.ndarray, first: np.ndarray, width: int) -> np.ndarray:
    """The same polynomial over `width` tokens from each index in `first` (for short texts)."""
    h = hashes[first]
    for t in range(1, width):
        h = h * _MULT + hashes[first + t]
    return h

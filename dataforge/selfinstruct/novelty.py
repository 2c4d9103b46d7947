"""Exact ROUGE-L novelty against a growing pool, fast enough for pools of tens of thousands.

The Self-Instruct and Alpaca code score every candidate against the whole pool with `rouge_score`
(an O(m*n) Python LCS table per pair). Here the decisions are the same, bit for bit, but most pairs
are never scored:

- tokens come from rouge_score's own `DefaultTokenizer`, so tokenization is identical by construction;
- the pool is tokenized once, tokens mapped to ints, and kept as an inverted index (token -> entries);
- LCS(a, b) <= the multiset overlap of a and b, so F <= 2*overlap/(|a|+|b|): one vectorized pass over
  the postings of the candidate's tokens bounds every entry, and entries whose bound is below the
  threshold are skipped without an LCS;
- the survivors get an exact bit-parallel LCS (Hyyro 2004) on Python integers, in order of decreasing
  bound, stopping as soon as no remaining bound can beat the best score found;
- F is then computed with rouge_score's own float expression, so ties and the threshold land alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Slack for float rounding in the bounds: prune only when the bound is below the target by more than this.
_EPS = 1e-9


@dataclass(frozen=True)
class Nearest:
    index: int    # position in the pool (insertion order)
    text: str
    score: float  # rouge_score's rougeL fmeasure


def rouge_l_f(lcs: int, target_len: int, prediction_len: int) -> float:
    """`rouge_score.rouge_scorer._score_lcs(...).fmeasure`, the same float operations in the same order."""
    if not target_len or not prediction_len:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def lcs_length(a_masks: dict[int, int], a_len: int, b: Sequence[int]) -> int:
    """Length of the longest common subsequence, bit-parallel over `a` (masks: token -> bits of its positions)."""
    full = (1 << a_len) - 1
    v = full
    for token in b:
        u = v & a_masks.get(token, 0)
        if u:
            v = ((v + u) | (v - u)) & full
    return a_len - v.bit_count()


def position_masks(tokens: Sequence[int]) -> dict[int, int]:
    masks: dict[int, int] = {}
    for i, t in enumerate(tokens):
        masks[t] = masks.get(t, 0) | (1 << i)
    return masks


class _Postings:
    """Entry ids and token counts for one token; a growable pair of arrays."""

    __slots__ = ("ids", "counts", "size")

    def __init__(self) -> None:
        self.ids = np.empty(4, dtype=np.int64)
        self.counts = np.empty(4, dtype=np.int64)
        self.size = 0

    def add(self, entry: int, count: int) -> None:
        if self.size == len(self.ids):
            self.ids = np.resize(self.ids, 2 * self.size)
            self.counts = np.resize(self.counts, 2 * self.size)
        self.ids[self.size], self.counts[self.size] = entry, count
        self.size += 1


class NoveltyIndex:
    """A pool of instructions that answers "what is the most similar entry, if it scores >= threshold?"."""

    def __init__(self, threshold: float = 0.7, use_stemmer: bool = False):
        from rouge_score.tokenizers import DefaultTokenizer

        self.threshold = threshold
        self._tokenizer = DefaultTokenizer(use_stemmer=use_stemmer)
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._seqs: list[list[int]] = []
        self._lengths = np.zeros(16, dtype=np.int64)
        self._postings: dict[int, _Postings] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def tokenize(self, text: str) -> list[str]:
        return self._tokenizer.tokenize(text)

    def add(self, text: str) -> int:
        """Add `text` to the pool; returns its index."""
        entry = len(self._texts)
        seq = [self._vocab.setdefault(tok, len(self._vocab)) for tok in self.tokenize(text)]
        self._texts.append(text)
        self._seqs.append(seq)
        if entry == len(self._lengths):
            self._lengths = np.resize(self._lengths, 2 * entry)
        self._lengths[entry] = len(seq)
        for token, count in Counter(seq).items():
            self._postings.setdefault(token, _Postings()).add(entry, count)
        return entry

    def nearest_above(self, text: str, threshold: float | None = None) -> Nearest | None:
        """The pool entry with the highest ROUGE-L F against `text` if that F >= threshold, else None.

        Ties go to the earliest entry, as `argmax` over a list of `rouge_score` scores would.
        """
        threshold = self.threshold if threshold is None else threshold
        n = len(self._texts)
        tokens = self.tokenize(text)
        m = len(tokens)
        if not n or not m:
            return None  # rouge_score scores an empty side as 0
        seq = [self._vocab.get(tok, -1) for tok in tokens]
        known = Counter(t for t in seq if t >= 0)
        if not known:
            return None
        ids = np.concatenate([self._postings[t].ids[:self._postings[t].size] for t in known])
        weights = np.concatenate([
            np.minimum(self._postings[t].counts[:self._postings[t].size], c) for t, c in known.items()
        ])
        overlap = np.bincount(ids, weights=weights, minlength=n)
        bound = 2.0 * overlap / (self._lengths[:n] + m)
        survivors = np.flatnonzero(bound >= threshold - _EPS)
        if not len(survivors):
            return None
        order = survivors[np.lexsort((survivors, -bound[survivors]))]
        masks = position_masks(seq)
        best: Nearest | None = None
        for entry in order.tolist():
            if best is not None and bound[entry] < best.score - _EPS:
                break
            pool_seq = self._seqs[entry]
            score = rouge_l_f(lcs_length(masks, m, pool_seq), m, len(pool_seq))
            if score >= threshold and (best is None or score > best.score
                                       or (score == best.score and entry < best.index)):
                best = Nearest(entry, self._texts[entry], score)
        return best

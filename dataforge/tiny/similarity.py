"""Word-shingle Jaccard similarity, as the build's near-duplicate stage defines it.

The demo generator uses it to guarantee two things a build can then be checked against: distinct
records stay well below the near-duplicate threshold, and the planted near duplicates stay well
above it (the default stage uses word 3-gram shingles of the lowercased text at threshold 0.8).
"""

from __future__ import annotations

SHINGLE_SIZE = 3
DISTINCT_MAX = 0.6  # every pair of distinct demo records is below this
NEAR_MIN = 0.85  # every planted near duplicate is at or above this, against its original


def shingles(text: str, size: int = SHINGLE_SIZE) -> frozenset[tuple[str, ...]]:
    words = text.lower().split()
    if len(words) <= size:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i:i + size]) for i in range(len(words) - size + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)

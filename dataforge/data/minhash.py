"""MinHash signatures and LSH banding in vectorized numpy: the core of near-duplicate detection.

Signatures: each text becomes its set of word `shingle_size`-grams (dataforge.data.ngrams), each
shingle a 31-bit value x. Permutation i is the universal hash h_i(x) = (A_i * x + B_i) mod p with
the Mersenne prime p = 2^31 - 1. The permutations come in runs of RUN = 8: inside run g,
(A, B) = (a_g + k*c_g, b_g + k*d_g) mod p for k = 0..7, with seeded a_g, c_g in [1, p) and b_g, d_g
in [0, p), independent across runs. Every h_i has the textbook form, and any two are independent
(for k != k' the map (a, c) -> (a + k c, a + k' c) is a bijection of Z_p^2), so the estimator's
variance is that of independent permutations. The run is what makes it fast: h(x) = (a x + b) mod p
and its step (c x + d) mod p are computed once per run in uint64 (a * x + b < 2^62 is exact; mod p
is two Mersenne folds (y & p) + (y >> 31) and a conditional subtraction), and each further
permutation costs one add and one conditional subtraction in uint32 (~0.3 ns per shingle, against
~1.2 ns for a multiply and two folds). Runs stay short because one progression over all 128
permutations has heavier tails than independent permutations (measured over 11,200 pairs: estimate
errors beyond 3.5 standard deviations 0.15 % of the time, against 0.06 %); runs of 8 or 16 match
independent permutations. A full-range multiplier matters: with a small A_i the map barely wraps
around p, stays nearly monotone in x, and all permutations pick the same minimum.

Minima are < 2^31, so signatures are uint32 (1 M records x 128 permutations = 512 MB). Two
distinct shingles share x with probability 2^-31, far below the estimator's own noise. Work goes
one permutation at a time over ~32 K shingles, so the arrays stay in cache, and chunks of records
run on several threads.

Banding: `bands` bands of `rows` values each; a band's values are hashed to one uint64 key, and
two records that share any band key become a candidate pair. Candidates are then verified by the
fraction of agreeing signature values (the MinHash estimate of their Jaccard similarity), so LSH is
only a filter: see `lsh_shape` for how its S-curve is placed.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import xxhash

from dataforge.data.ngrams import mix64, token_hashes, tokenize, window_hashes

MERSENNE_31 = np.uint64((1 << 31) - 1)
_P32 = np.uint32((1 << 31) - 1)
_SHIFT_31 = np.uint64(31)
# Permutations per arithmetic run (see the module doc).
RUN = 8
# Share of pairs at exactly the threshold that LSH must pass on to verification (see lsh_shape).
CANDIDATE_RATE_AT_THRESHOLD = 0.98
# A band bucket with more members than this pairs each member only with its next BUCKET_WINDOW
# members (input order), so one huge bucket cannot produce a quadratic number of candidates.
BUCKET_WINDOW = 64
_RECORD_CHUNK = 20_000
_SHINGLE_CHUNK = 1 << 15
_VERIFY_CHUNK = 1 << 16


def _worker_count() -> int:
    """Threads for signature chunks: numpy and polars release the GIL in their loops, so chunks
    run in parallel on the CPUs this process may use (at most 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def _seeded_u64(seed: int, label: str, count: int) -> np.ndarray:
    """`count` uint64 values derived from the seed with xxh3, identical on every machine and numpy."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    return np.array([xxhash.xxh3_64_intdigest(f"{label}:{i}".encode(), seed=s) for i in range(count)],
                    dtype=np.uint64)


class MinHasher:
    """Seeded MinHash over word shingles; the same (num_perm, seed) always gives the same signatures."""

    def __init__(self, num_perm: int, seed: int):
        self.num_perm = num_perm
        runs = [_run_coefficients(seed, g) for g in range(-(-num_perm // RUN))]
        self.a, self.b, self.c, self.d = (np.array(col, dtype=np.uint64) for col in zip(*runs, strict=True))

    def signatures(self, frame: pl.DataFrame, columns: list[str], shingle_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 signatures of shape (frame.height, num_perm); whether each row has any shingle).

        A row's text is its `columns` joined by newlines, built one chunk at a time so the whole
        corpus is never held twice. Rows without a single word get an all-0xFFFFFFFF row (no real
        minimum reaches 2^31) and `False`; callers must keep them out of LSH, or every empty text
        would collide with every other.
        """
        n = frame.height
        sig = np.full((n, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        present = np.zeros(n, dtype=bool)
        text = pl.concat_str([pl.col(c) for c in columns], separator="\n", ignore_nulls=True)

        def one_chunk(lo: int) -> None:  # chunks write disjoint rows, so threads never race
            texts = frame.slice(lo, _RECORD_CHUNK).select(text).to_series()
            hashes, counts = token_hashes(tokenize(texts))
            shingles, owner, _ = window_hashes(hashes, counts, shingle_size)
            present[lo + np.unique(owner)] = True
            self._fill(sig, lo, shingles >> np.uint64(33), owner)

        starts = range(0, n, _RECORD_CHUNK)
        with ThreadPoolExecutor(max_workers=max(1, min(len(starts), _worker_count()))) as pool:
            list(pool.map(one_chunk, starts))
        return sig, present

    def _fill(self, sig: np.ndarray, row0: int, x: np.ndarray, owner: np.ndarray) -> None:
        """Write the signature rows of the owners of shingles `x`, slice by slice: a slice holds
        ~_SHINGLE_CHUNK shingles and never splits one owner's shingles."""
        if len(x) == 0:
            return
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # each owner's first shingle
        bounds = np.r_[first, len(x)]
        cuts = np.searchsorted(first, np.arange(0, len(x), _SHINGLE_CHUNK), side="right") - 1
        cuts = np.unique(np.r_[cuts, len(first)])
        n_max = int(np.diff(bounds[cuts]).max())
        y, w = np.empty(n_max, np.uint64), np.empty(n_max, np.uint64)  # reused: no page faults per slice
        h, step, wrapped = (np.empty(n_max, np.uint32) for _ in range(3))
        for s0, s1 in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            xs = x[bounds[s0]:bounds[s1]]
            m = len(xs)
            starts = first[s0:s1] - bounds[s0]
            block = np.empty((self.num_perm, s1 - s0), dtype=np.uint32)
            for g in range(len(self.a)):
                _affine_mod_p(xs, self.a[g], self.b[g], y[:m], w[:m], h[:m])
                _affine_mod_p(xs, self.c[g], self.d[g], y[:m], w[:m], step[:m])
                for i in range(g * RUN, min((g + 1) * RUN, self.num_perm)):
                    if i > g * RUN:  # h = (h + step) mod p; both < p < 2^31, so the sum fits uint32
                        h[:m] += step[:m]
                        np.subtract(h[:m], _P32, out=wrapped[:m])  # wraps above h when h < p
                        np.minimum(h[:m], wrapped[:m], out=h[:m])
                    block[i] = np.minimum.reduceat(h[:m], starts)
            sig[row0 + owner[first[s0:s1]]] = block.T


def _run_coefficients(seed: int, run: int) -> tuple[int, int, int, int]:
    """Seeded (a, b, c, d) of one run, re-drawn in the (~RUN / 2^31) case where some a + k*c = 0
    mod p would make a permutation constant."""
    p = int(MERSENNE_31)
    for attempt in itertools.count():
        a, c, b, d = (int(v) for v in _seeded_u64(seed, f"minhash-run-{run}-{attempt}", 4))
        a, c, b, d = a % (p - 1) + 1, c % (p - 1) + 1, b % p, d % p
        if all((a + k * c) % p for k in range(RUN)):
            return a, b, c, d


def _affine_mod_p(x: np.ndarray, a: np.uint64, b: np.uint64, y: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out = (a * x + b) mod p as uint32, for x, a, b < p (the uint64 product is exact below 2^62);
    y and w are scratch arrays of x's length."""
    np.multiply(x, a, out=y)
    y += b
    for _ in range(2):  # y mod p == (y & p) + (y >> 31) mod p; two folds leave y in [0, p]
        np.right_shift(y, _SHIFT_31, out=w)
        y &= MERSENNE_31
        y += w
    np.subtract(y, MERSENNE_31, out=w)  # wraps above y when y < p
    np.minimum(y, w, out=y)
    out[...] = y


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sort and compare: numpy 2.3's np.unique is ~70x slower on 1 M uint64 values."""
    s = np.sort(x)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def candidate_rate(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard similarity shares at least one band: the S-curve."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def lsh_shape(threshold: float, num_perm: int, bands: int | None = None) -> tuple[int, int]:
    """(bands, rows per band).

    Every candidate is verified against the threshold afterwards, so an LSH false positive costs
    one signature comparison while an LSH false negative is a duplicate lost for good. The S-curve
    is therefore put just below the threshold: the most rows per band (fewest candidates) for which
    a pair at exactly the threshold still becomes a candidate with probability >= 0.98. For 128
    permutations at 0.8 that is 18 bands x 7 rows (curve midpoint (1/b)^(1/r) ~ 0.66; candidate
    rate 0.986 at J=0.8, 0.999 at 0.85, 0.79 at 0.7, 0.13 at 0.5).
    """
    if bands is not None:
        return bands, max(1, num_perm // bands)
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        b = num_perm // rows
        if candidate_rate(threshold, b, rows) >= CANDIDATE_RATE_AT_THRESHOLD:
            best = (b, rows)
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 key of each band of each signature, shape (n, bands); band j's index is mixed in so
    equal values in different bands never share a bucket."""
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            k = np.full(sig.shape[0], np.uint64(j + 1), dtype=np.uint64)
            for c in range(j * rows, (j + 1) * rows):
                k = mix64(k ^ sig[:, c].astype(np.uint64))
            keys[:, j] = k
    return keys


def candidate_pairs(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (i < j) of `rows` that share a band key in any band (row numbers are the
    positions in `keys`). Buckets larger than BUCKET_WINDOW + 1 are paired within a sliding window."""
    pairs = []
    for j in range(keys.shape[1]):
        k = keys[rows, j]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same_next = ks[1:] == ks[:-1]
        if not same_next.any():
            continue
        member = np.r_[same_next, False] | np.r_[False, same_next]
        pos = np.flatnonzero(member)
        group = np.cumsum(np.r_[True, ~same_next])[pos]
        a, b = window_pairs(group, rows[order[pos]])
        pairs.append(a.astype(np.uint64) << np.uint64(32) | b.astype(np.uint64))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    code = sorted_unique(np.concatenate(pairs))
    return (code >> np.uint64(32)).astype(np.int64), (code & np.uint64(0xFFFFFFFF)).astype(np.int64)


def window_pairs(group: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (smaller id, larger id) of `ids` that share a `group` and sit at most BUCKET_WINDOW apart.
    Members of a group are contiguous and in ascending row order, so every engine that sorts a band
    bucket that way forms the same pairs."""
    out_a, out_b = [], []
    for d in range(1, BUCKET_WINDOW + 1):
        if d >= len(ids):
            break
        same = group[d:] == group[:-d]
        if not same.any():
            break
        a, b = ids[:-d][same], ids[d:][same]
        out_a.append(np.minimum(a, b))
        out_b.append(np.maximum(a, b))
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


def cross_candidate_pairs(keys_a: np.ndarray, rows_a: np.ndarray, keys_b: np.ndarray,
                          rows_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (row of a, row of b) sharing a band key; pairs inside a or inside b are never
    formed. Each a-row meets at most BUCKET_WINDOW b-rows per band bucket (the first in b's order)."""
    pairs = []
    for j in range(keys_a.shape[1]):
        kb = keys_b[rows_b, j]
        order = np.argsort(kb, kind="stable")
        kbs = kb[order]
        ka = keys_a[rows_a, j]
        lo = np.searchsorted(kbs, ka, side="left")
        hit_count = np.minimum(np.searchsorted(kbs, ka, side="right") - lo, BUCKET_WINDOW)
        hit = np.flatnonzero(hit_count)
        if len(hit) == 0:
            continue
        rep = np.repeat(hit, hit_count[hit])
        step = np.arange(len(rep)) - np.repeat(np.cumsum(hit_count[hit]) - hit_count[hit], hit_count[hit])
        a = rows_a[rep].astype(np.uint64)
        b = rows_b[order[lo[rep] + step]].astype(np.uint64)
        pairs.append(a << np.uint64(32) | b)
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    code = sorted_unique(np.concatenate(pairs))
    return (code >> np.uint64(32)).astype(np.int64), (code & np.uint64(0xFFFFFFFF)).astype(np.int64)


def signature_similarity(sig_a: np.ndarray, i: np.ndarray, sig_b: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of pairs (sig_a[i], sig_b[j]): the share of agreeing values."""
    out = np.empty(len(i), dtype=np.float64)
    for lo in range(0, len(i), _VERIFY_CHUNK):
        hi = lo + _VERIFY_CHUNK
        out[lo:hi] = (sig_a[i[lo:hi]] == sig_b[j[lo:hi]]).sum(axis=1)
    return out / sig_a.shape[1]


def meets_threshold(similarity: np.ndarray, threshold: float, num_perm: int) -> np.ndarray:
    """similarity >= threshold, decided on agreement counts so 0.8 * 128 = 102.4 means >= 103 agree."""
    return np.round(similarity * num_perm) >= math.ceil(threshold * num_perm - 1e-9)


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label of each of n nodes given edges (i, j); the label is the component's smallest
    node. Vectorized union-find: hook each edge's larger root onto the smaller, then pointer-jump."""
    labels = np.arange(n, dtype=np.int64)
    while True:
        li, lj = labels[i], labels[j]
        diff = li != lj
        if not diff.any():
            return labels
        li, lj = li[diff], lj[diff]
        np.minimum.at(labels, np.maximum(li, lj), np.minimum(li, lj))
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt

"""Near dedupe for the stream engine: the same MinHash-LSH rule as dataforge.data.dedupe, decided on
compact arrays.

Pass 1 hands each chunk of records to `NearIndex.add`: their signatures are computed and reduced at
once to LSH band keys (bands x 8 bytes per record, spooled to one file per band), so signatures are
never held for the whole corpus. `decide` then reads the band keys back one band at a time, finds the
candidate pairs exactly as `near_duplicates` does (`candidate_pairs` over the same rows in the same order),
and re-reads only the candidate records (`read_rows`) to recompute their signatures and field texts
for verification (`verified_pairs`). Candidates are a small share of the corpus (about the share of
duplicates), so that is the only text held at once. Connected components and the kept record of each
cluster are computed over all rows, as in memory, so clusters, kept ids and similarities are the
same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dataforge.config.build import KeepRule, NearDedupeConfig
from dataforge.data.dedupe import field_texts, keepers, near_stats, output_lengths, verified_pairs
from dataforge.data.minhash import (
    MinHasher,
    band_keys,
    candidate_pairs,
    connected_components,
    lsh_shape,
    signature_similarity,
)


@dataclass
class NearDecision:
    """What pass 2 applies: which rows go, whose cluster they join, and with what similarity."""

    gone: np.ndarray                    # sorted row numbers (over the records near dedupe saw) removed
    keeper: np.ndarray                  # the kept row of each gone row
    similarity: np.ndarray              # estimated similarity of each gone row to its keeper
    names: dict[int, tuple[str, str]]   # row -> (id, "file:line") for every gone row and keeper
    stats: dict = field(default_factory=dict)


class NearIndex:
    """Pass-1 state of near dedupe: band keys on disk, and per row whether it has shingles, whether
    its source takes part, its output length and its source."""

    def __init__(self, cfg: NearDedupeConfig, seed: int, spool: Path):
        self.cfg = cfg
        self.hasher = MinHasher(cfg.num_perm, seed)
        self.bands, self.rows = lsh_shape(cfg.threshold, cfg.num_perm, cfg.bands)
        spool.mkdir(parents=True, exist_ok=True)
        # One file per band, so that the candidate search reads one band (8 bytes a record) at a time.
        self.paths = [spool / f"band_keys-{j:03d}.bin" for j in range(self.bands)]
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 - closed in decide()
        self.present: list[np.ndarray] = []
        self.active: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.seen: dict[str, int] = {}
        self.n = 0

    def add(self, records: pl.DataFrame) -> None:
        """Band keys of one chunk of records, in order (rows of skipped sources get zero keys)."""
        take = ~records.get_column("source").is_in(self.cfg.skip_sources).to_numpy() if self.cfg.skip_sources \
            else np.ones(records.height, dtype=bool)
        texts = field_texts(records.filter(pl.Series(take)), self.cfg.fields)
        sig, present_sub = self.hasher.signatures(texts, self.cfg.fields, self.cfg.shingle_size)
        keys = np.zeros((records.height, self.bands), dtype=np.uint64)
        keys[take] = band_keys(sig, self.bands, self.rows)
        present = np.zeros(records.height, dtype=bool)
        present[take] = present_sub
        for j, f in enumerate(self._files):
            f.write(np.ascontiguousarray(keys[:, j]).tobytes())
        self.present.append(present)
        self.active.append(take)
        self.lengths.append(output_lengths(records).astype(np.int32) if self.cfg.keep != KeepRule.first
                            else np.zeros(0, np.int32))
        for src, k in records.get_column("source").value_counts().iter_rows():
            self.seen[src] = self.seen.get(src, 0) + k
        self.n += records.height

    def decide(self, read_rows: Callable[[np.ndarray, list[str]], pl.DataFrame]) -> NearDecision:
        """Clusters over every row added; `read_rows(rows, columns)` returns those records' columns
        (in row order) from the pass-1 spool."""
        for f in self._files:
            f.close()
        n, cfg = self.n, self.cfg
        present = np.concatenate(self.present) if self.present else np.zeros(0, bool)
        active = np.concatenate(self.active) if self.active else np.zeros(0, bool)
        i, j = candidate_pairs(_BandFiles(self.paths, n), np.flatnonzero(present & active))
        for path in self.paths:
            path.unlink()
        cand = np.unique(np.r_[i, j])
        frame = read_rows(cand, ["id", "origin_file", "origin_line", "source", *_needed(cfg.fields)])
        texts = field_texts(frame, cfg.fields)
        sig, _ = self.hasher.signatures(texts, cfg.fields, cfg.shingle_size)
        li, lj, pair_stats = verified_pairs(sig, texts, np.searchsorted(cand, i), np.searchsorted(cand, j), cfg)
        labels = connected_components(n, cand[li], cand[lj])
        lengths = np.concatenate(self.lengths) if cfg.keep != KeepRule.first else None
        keeper = keepers(labels, lengths, cfg.keep)
        gone = np.flatnonzero(keeper != np.arange(n))
        kept_of = keeper[gone]
        sim = signature_similarity(sig, np.searchsorted(cand, gone), sig, np.searchsorted(cand, kept_of))
        origin = frame.select(pl.format("{}:{}", pl.col("origin_file"), pl.col("origin_line"))).to_series()
        wanted = np.searchsorted(cand, np.unique(np.r_[gone, kept_of]))
        names = dict(zip(cand[wanted].tolist(), zip(frame.get_column("id").gather(wanted).to_list(),
                                                     origin.gather(wanted).to_list(), strict=True), strict=True))
        lost_src = frame.get_column("source").gather(np.searchsorted(cand, gone)).value_counts()
        lost = dict(lost_src.iter_rows()) if len(gone) else {}
        stats = near_stats(self.seen, lost, cfg, self.bands, self.rows, pair_stats,
                           int(len(np.unique(kept_of))), len(gone))
        return NearDecision(gone, kept_of, sim, names, stats)


class _BandFiles:
    """The band keys as `candidate_pairs` indexes them (`keys[rows, band]`, `keys.shape`), read from
    their per-band files one band at a time instead of as one (records x bands) array."""

    def __init__(self, paths: list[Path], n: int):
        self.paths, self.shape = paths, (n, len(paths))

    def __getitem__(self, index: tuple[np.ndarray, int]) -> np.ndarray:
        rows, band = index
        return np.fromfile(self.paths[band], dtype=np.uint64)[rows]


def _needed(fields: list[str]) -> list[str]:
    """Record columns `field_texts` reads for these compared fields."""
    return list(dict.fromkeys(fields))

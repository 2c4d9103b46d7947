"""How many edited words near-dedupe still catches: catch rate per number of changed words.

    .venv/bin/python benchmarks/bench_dedupe_edits.py            # 2,000 pairs per edit count
    .venv/bin/python benchmarks/bench_dedupe_edits.py --pairs 500

Each pair is a 40-word record and a copy with 1..5 of its words replaced by other words (distinct
positions). Two layouts:
* `response`: a 10-word instruction kept as is and a 40-word output that gets the edits (an
  answer re-worded in a few places);
* `anywhere`: a 10-word instruction and a 30-word output, the edits at random positions of the
  40 words (so some land in the instruction).
Words are drawn from 20,000 pseudo-words, so unrelated records share no shingle and every pair is
judged on its own. All pairs of one layout go through the real `near_duplicates` (default config) in
one frame; a pair is caught when the copy is removed in favour of its original. The table also gives
the mean true Jaccard of the word 3-shingles, of the whole record and of its most-changed field (the
per-field rule thresholds the latter at 0.8).
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import polars as pl

from dataforge.config.build import NearDedupeConfig
from dataforge.data.dedupe import near_duplicates
from dataforge.data.record import RECORD_SCHEMA

VOCAB = [f"{a}{b}{c}" for a in "bcdfghjklm" for b in ("ra", "el", "ou", "in", "ta", "os", "ue", "ai", "ex", "um")
         for c in range(200)]
_TOKEN = re.compile(r"[^\W_]+")


def shingles(text: str, k: int = 3) -> set[tuple[str, ...]]:
    toks = _TOKEN.findall(text.lower())
    if len(toks) < k:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + k]) for i in range(len(toks) - k + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def make_pairs(rng: np.random.Generator, layout: str, edits: int, pairs: int) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(original, copy) as (instruction, output) texts."""
    n_ins, n_out = (10, 40) if layout == "response" else (10, 30)
    out = []
    for _ in range(pairs):
        words = [VOCAB[k] for k in rng.integers(len(VOCAB), size=n_ins + n_out)]
        copy = list(words)
        lo = n_ins if layout == "response" else 0
        for pos in rng.choice(np.arange(lo, n_ins + n_out), size=edits, replace=False):
            copy[pos] = next(w for w in (VOCAB[k] for k in rng.integers(len(VOCAB), size=8)) if w != words[pos])
        out.append(((" ".join(words[:n_ins]), " ".join(words[n_ins:])), (" ".join(copy[:n_ins]), " ".join(copy[n_ins:]))))
    return out


def catch_rates(layout: str, max_edits: int, pairs: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows, groups = [], []
    for edits in range(1, max_edits + 1):
        for orig, copy in make_pairs(rng, layout, edits, pairs):
            groups.append((edits, len(rows), len(rows) + 1, orig, copy))
            rows += [orig, copy]
    frame = pl.DataFrame([{"id": f"r{i}", "source": "s", "origin_file": "pairs.jsonl", "origin_line": i + 1, "system": "",
                           "history": [], "instruction": ins, "input": "", "output": out}
                          for i, (ins, out) in enumerate(rows)], schema=RECORD_SCHEMA)
    t0 = time.process_time()
    res = near_duplicates(frame, NearDedupeConfig(), seed=seed)
    cpu = time.process_time() - t0
    removed = {r["removed_id"]: r["kept_id"] for r in res.extra["clusters"]}
    table = []
    for edits in range(1, max_edits + 1):
        mine = [g for g in groups if g[0] == edits]
        caught = sum(removed.get(f"r{c}") == f"r{o}" for _, o, c, _, _ in mine)
        whole = np.mean([jaccard("\n".join(a), "\n".join(b)) for *_, a, b in mine])
        field = np.mean([min(jaccard(x, y) for x, y in zip(a, b, strict=True)) for *_, a, b in mine])
        table.append({"layout": layout, "edits": edits, "pairs": len(mine), "caught": caught / len(mine),
                      "jaccard_whole": whole, "jaccard_field": field, "cpu_s": cpu})
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2000, help="pairs per edit count (default 2,000)")
    ap.add_argument("--max-edits", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| layout | words changed | pairs | caught | mean true Jaccard, whole record | mean true Jaccard, most-changed field |")
    print("|---|---:|---:|---:|---:|---:|")
    for layout in ("response", "anywhere"):
        for r in catch_rates(layout, args.max_edits, args.pairs, args.seed):
            print(f"| {r['layout']} | {r['edits']} | {r['pairs']:,} | {r['caught']:.3f} | {r['jaccard_whole']:.3f} "
                  f"| {r['jaccard_field']:.3f} |")


if __name__ == "__main__":
    main()

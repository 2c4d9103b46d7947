"""Exact, near and reference dedupe against similarities computed independently here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataforge.config.build import KeepRule, NearDedupeConfig
from dataforge.data.clean import content_hashes
from dataforge.data.dedupe import exact_duplicates, near_duplicates, reference_duplicates, shingle_jaccard
from dataforge.data.minhash import MinHasher, candidate_rate, connected_components, lsh_shape
from dataforge.data.record import RECORD_SCHEMA
from dataforge.errors import InternalError

VOCAB = [f"w{i}" for i in range(3000)]


def frame(rows: list[tuple[str, str, str]], source: str = "s") -> pl.DataFrame:
    """Records (instruction, input, output) with ids r0, r1, ... and a real content hash."""
    df = pl.DataFrame([
        {"id": f"r{i}", "source": source, "origin_file": "data.jsonl", "origin_line": i + 1, "system": "", "history": [],
         "instruction": ins, "input": inp, "output": out}
        for i, (ins, inp, out) in enumerate(rows)
    ], schema=RECORD_SCHEMA)
    return df.with_columns(pl.Series("content_hash", content_hashes(df)))


def shingles(text: str, k: int = 3) -> set[tuple[str, ...]]:
    toks = re.findall(r"[^\W_]+", text.lower())
    if len(toks) < k:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + k]) for i in range(len(toks) - k + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def words(rng: np.random.Generator, n: int) -> list[str]:
    return [VOCAB[i] for i in rng.integers(len(VOCAB), size=n)]


def edited(rng: np.random.Generator, toks: list[str], edits: int) -> list[str]:
    out = list(toks)
    for _ in range(edits):
        out[int(rng.integers(len(out)))] = VOCAB[int(rng.integers(len(VOCAB)))]
    return out


def test_exact_duplicates_keep_the_first_and_name_it():
    df = frame([("Say hi", "", "Hi."), ("Say bye", "", "Bye."), ("Say hi", "", "Hi."), ("Say hi", "", "Hi.")])
    res = exact_duplicates(df)
    assert res.kept["id"].to_list() == ["r0", "r1"]
    assert res.rejected["id"].to_list() == ["r2", "r3"]
    assert set(res.rejected["stage"]) == {"dedupe_exact"} and set(res.rejected["reason"]) == {"exact_duplicate"}
    assert res.rejected["detail"][0] == "exact duplicate of r0 (data.jsonl:1)"
    assert res.extra["clusters"][1] == {"removed_id": "r3", "kept_id": "r0", "similarity": 1.0, "kind": "exact",
                                        "removed_origin": "data.jsonl:4", "kept_origin": "data.jsonl:1"}


def test_exact_duplicates_need_the_content_hash():
    with pytest.raises(InternalError, match="content_hash"):
        exact_duplicates(frame([("a", "", "b")]).drop("content_hash"))


def test_signature_agreement_estimates_the_true_jaccard():
    """Across pairs from J ~ 0.2 to 1, the share of equal MinHash values is within 4.5 standard
    deviations of the exact Jaccard of the shingle sets, and unbiased on average."""
    rng = np.random.default_rng(0)
    a_texts, b_texts = [], []
    for k in range(300):
        toks = words(rng, int(rng.integers(30, 120)))
        a_texts.append(" ".join(toks))
        b_texts.append(" ".join(edited(rng, toks, k % 15)))
    hasher = MinHasher(128, seed=7)
    sig_a, _ = hasher.signatures(pl.DataFrame({"t": a_texts}), ["t"], 3)
    sig_b, _ = hasher.signatures(pl.DataFrame({"t": b_texts}), ["t"], 3)
    est = (sig_a == sig_b).mean(axis=1)
    true = np.array([jaccard(a, b) for a, b in zip(a_texts, b_texts, strict=True)])
    assert true.min() < 0.3 and true.max() == 1.0
    sd = np.sqrt(true * (1 - true) / 128) + 1e-9
    assert np.all(np.abs(est - true) <= 4.5 * sd + 1e-9)
    assert abs(float((est - true).mean())) < 0.01


def test_lsh_passes_pairs_at_the_threshold():
    bands, rows = lsh_shape(0.8, 128)
    assert (bands, rows) == (18, 7)
    assert candidate_rate(0.8, bands, rows) >= 0.98
    assert candidate_rate(0.8, 128 // (rows + 1), rows + 1) < 0.98  # one more row per band would miss pairs
    assert lsh_shape(0.8, 128, bands=16) == (16, 8)


def test_connected_components_match_a_plain_union_find():
    rng = np.random.default_rng(3)
    n = 500
    i, j = rng.integers(n, size=300), rng.integers(n, size=300)
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [min(x for x in range(n) if find(x) == find(y)) for y in range(n)]
    assert connected_components(n, i, j).tolist() == expected


def near_corpus(seed: int) -> tuple[pl.DataFrame, dict[str, str]]:
    """60 unrelated records plus 20 one-word edits (true J >= 0.8) of the first 20; returns the
    frame and copy id -> original id."""
    rng = np.random.default_rng(seed)
    rows = [(" ".join(words(rng, 6)), "", " ".join(words(rng, int(rng.integers(50, 90))))) for _ in range(60)]
    originals = {}
    for b in range(20):
        ins, inp, out = rows[b]
        rows.append((ins, inp, " ".join(edited(rng, out.split(), 1))))
        originals[f"r{len(rows) - 1}"] = f"r{b}"
    return frame(rows), originals


def test_near_duplicates_remove_the_edited_copies_only():
    df, originals = near_corpus(1)
    texts = dict(zip(df["id"], (df["instruction"] + "\n" + df["input"] + "\n" + df["output"]), strict=True))
    assert all(jaccard(texts[c], texts[o]) >= 0.85 for c, o in originals.items())
    res = near_duplicates(df, NearDedupeConfig(), seed=5)
    assert sorted(res.rejected["id"]) == sorted(originals)
    clusters = {r["removed_id"]: r for r in res.extra["clusters"]}
    for copy, orig in originals.items():
        row = clusters[copy]
        assert row["kept_id"] == orig and row["kind"] == "near"
        true = jaccard(texts[copy], texts[orig])
        assert abs(row["similarity"] - true) <= 4.5 * math.sqrt(true * (1 - true) / 128) + 1e-9
    assert set(res.rejected["stage"]) == {"dedupe_near"} and set(res.rejected["reason"]) == {"near_duplicate"}
    detail = res.rejected.filter(pl.col("id") == "r60")["detail"][0]
    assert detail.startswith("near duplicate of r0 (data.jsonl:1), estimated similarity 0.")


def test_clusters_map_every_removed_record_to_a_kept_one():
    df, _ = near_corpus(2)
    res = near_duplicates(df, NearDedupeConfig(), seed=1)
    kept = set(res.kept["id"])
    assert res.kept["cluster_id"].to_list() == res.kept["id"].to_list()
    assert {r["removed_id"] for r in res.extra["clusters"]} == set(res.rejected["id"])
    assert all(r["kept_id"] in kept for r in res.extra["clusters"])
    assert res.kept.height + res.rejected.height == df.height


def test_pairs_below_the_threshold_are_kept():
    rng = np.random.default_rng(4)
    base = words(rng, 60)
    far = edited(rng, base, 12)  # ~12 changed words of 60: Jaccard ~0.3
    df = frame([("q", "", " ".join(base)), ("q", "", " ".join(far))])
    assert jaccard(" ".join(base), " ".join(far)) < 0.6
    assert near_duplicates(df, NearDedupeConfig(), seed=0).kept.height == 2


def test_keep_longest_keeps_the_longest_output_and_ties_go_to_the_first():
    rng = np.random.default_rng(5)
    base = words(rng, 80)
    longer = base + ["extra"]
    df = frame([("q", "", " ".join(base)), ("q", "", " ".join(longer)), ("q", "", " ".join(longer))])
    res = near_duplicates(df, NearDedupeConfig(keep=KeepRule.longest), seed=0)
    assert res.kept["id"].to_list() == ["r1"]
    first = near_duplicates(df, NearDedupeConfig(keep=KeepRule.first), seed=0)
    assert first.kept["id"].to_list() == ["r0"]


def test_records_without_words_are_never_near_duplicates():
    df = frame([("!!!", "", "???"), ("...", "", "---"), ("", "", "")])
    assert near_duplicates(df, NearDedupeConfig(), seed=0).kept.height == 3


def test_near_dedupe_is_deterministic():
    df, _ = near_corpus(6)
    a = near_duplicates(df, NearDedupeConfig(), seed=9)
    b = near_duplicates(df, NearDedupeConfig(), seed=9)
    assert a.extra["clusters"] == b.extra["clusters"]


def test_reference_dedupe_drops_matches_only_and_leaves_the_reference_alone():
    rng = np.random.default_rng(7)
    ref_words = words(rng, 70)
    twin = words(rng, 70)
    references = [" ".join(ref_words), " ".join(words(rng, 70)), " ".join(ref_words)]
    before = list(references)
    df = frame([
        ("q", "", " ".join(edited(rng, ref_words, 1))),   # near the reference
        ("q", "", " ".join(twin)),                        # near the next record, not the reference
        ("q", "", " ".join(edited(rng, twin, 1))),
        ("q", "", " ".join(words(rng, 70))),
    ])
    res = reference_duplicates(df, references, NearDedupeConfig(), seed=3)
    assert references == before
    assert res.rejected["id"].to_list() == ["r0"]
    assert res.kept["id"].to_list() == ["r1", "r2", "r3"]
    row = res.rejected.row(0, named=True)
    assert row["stage"] == "dedupe_reference" and row["reason"] == "near_duplicate_of_reference"
    assert row["detail"].startswith("near duplicate of reference #0 (estimated similarity ")
    assert row["detail"].endswith(f"): '{' '.join(ref_words)[:80]}'")


RC_FIXTURE = Path(__file__).parent / "fixtures_dedupe" / "reading_comprehension.jsonl"


def rc_frame() -> pl.DataFrame:
    rows = [json.loads(line) for line in RC_FIXTURE.read_text(encoding="utf-8").splitlines()]
    return frame([(r["instruction"], r["input"], r["output"]) for r in rows], source="rc")


def test_questions_over_a_shared_passage_are_all_kept():
    """Several questions per passage, each with its own answer (two answered just "Yes."): the whole
    records look alike (the passage dominates), but the questions differ, so nothing is a duplicate."""
    df = rc_frame()
    texts = (df["instruction"] + "\n" + df["input"] + "\n" + df["output"]).to_list()
    same_passage = [(a, b) for a in range(df.height) for b in range(a + 1, df.height) if df["input"][a] == df["input"][b]]
    assert min(jaccard(texts[a], texts[b]) for a, b in same_passage) >= 0.8  # the old whole-record rule removed them
    res = near_duplicates(df, NearDedupeConfig(), seed=0)
    assert res.kept.height == df.height and res.rejected.height == 0
    assert res.stats["by_source"] == {"rc": {"in": df.height, "removed": 0, "skipped": False}}
    assert res.stats["kept_apart_by_field"]["instruction"] > 0


def test_near_copies_are_removed_when_every_field_is_near():
    """True near copies still go: an output with one word changed; a long instruction and its output
    each with one word changed; and a copy differing only in case and punctuation."""
    rng = np.random.default_rng(11)
    ins_long, out1, out2 = " ".join(words(rng, 40)), words(rng, 60), words(rng, 60)
    rows = [
        ("Summarize the report.", "", " ".join(out1)),
        ("Summarize the report.", "", " ".join(edited(rng, out1, 1))),
        (ins_long, "", " ".join(out2)),
        (" ".join(edited(rng, ins_long.split(), 1)), "", " ".join(edited(rng, out2, 1))),
        ("Name a colour.", "", "Blue, mostly."),
        ("NAME A COLOUR!", "", "blue ... mostly"),
        *[(" ".join(words(rng, 8)), "", " ".join(words(rng, 50))) for _ in range(10)],
    ]
    df = frame(rows)
    for orig, copy in ((0, 1), (2, 3), (4, 5)):  # every field of each planted pair is near, by an independent count
        assert all(jaccard(rows[orig][f], rows[copy][f]) >= 0.8 for f in (0, 2))
    res = near_duplicates(df, NearDedupeConfig(), seed=2)
    assert sorted(res.rejected["id"]) == ["r1", "r3", "r5"]
    assert {r["removed_id"]: r["kept_id"] for r in res.extra["clusters"]} == {"r1": "r0", "r3": "r2", "r5": "r4"}
    assert res.stats["by_source"]["s"] == {"in": 16, "removed": 3, "skipped": False}


def test_one_answer_to_two_different_questions_is_not_a_duplicate():
    rng = np.random.default_rng(12)
    answer = " ".join(words(rng, 60))
    df = frame([("What does the passage argue?", "", answer), ("Summarize the passage.", "", answer)])
    assert near_duplicates(df, NearDedupeConfig(), seed=0).kept.height == 2
    only_output = near_duplicates(df, NearDedupeConfig(fields=["output"]), seed=0)
    assert only_output.kept["id"].to_list() == ["r0"]


def test_skipped_sources_take_no_part_in_near_dedupe():
    df, originals = near_corpus(3)
    mixed = pl.concat([df.with_columns(pl.lit("kept").alias("source")),
                       df.with_columns(pl.lit("rc").alias("source"), ("rc-" + pl.col("id")).alias("id"))])
    res = near_duplicates(mixed, NearDedupeConfig(skip_sources=["rc"]), seed=5)
    assert sorted(res.rejected["id"]) == sorted(originals)
    assert res.kept.filter(pl.col("source") == "rc").height == df.height
    assert res.stats["by_source"] == {"kept": {"in": df.height, "removed": len(originals), "skipped": False},
                                      "rc": {"in": df.height, "removed": 0, "skipped": True}}


def test_shingle_jaccard_is_exact():
    rng = np.random.default_rng(13)
    base = [" ".join(words(rng, int(rng.integers(0, 40)))) for _ in range(60)]
    texts = base + [" ".join(edited(rng, t.split(), 2)) if t else "" for t in base] + ["x y", "X, y!", "y x"]
    i = np.r_[np.arange(60), 120, 120, np.arange(30)]
    j = np.r_[np.arange(60, 120), 121, 122, np.arange(30, 60)]
    got = shingle_jaccard(pl.Series(texts), i, j, 3)

    def expected(a: str, b: str) -> float:
        sa, sb = shingles(a), shingles(b)
        return len(sa & sb) / len(sa | sb) if sa | sb else 1.0

    assert got.tolist() == pytest.approx([expected(texts[a], texts[b]) for a, b in zip(i, j, strict=True)])
    assert got[60] == 1.0 and got[61] == 0.0  # short texts: the same words or nothing


def test_conversations_ending_alike_differ_by_their_history():
    rng = np.random.default_rng(14)
    turns = [[{"role": r, "content": " ".join(words(rng, 40))} for r in ("user", "assistant")] for _ in range(2)]
    copy = [dict(m) for m in turns[0]]
    copy[1]["content"] = " ".join(edited(rng, copy[1]["content"].split(), 1))
    closing = ("Thanks, that helps!", "", "You are welcome. " + " ".join(words(rng, 30)))
    df = frame([closing] * 3).with_columns(pl.Series("history", [turns[0], turns[1], copy],
                                                     dtype=RECORD_SCHEMA["history"]))
    res = near_duplicates(df, NearDedupeConfig(), seed=0)
    assert res.rejected["id"].to_list() == ["r2"]  # the same conversation, one word edited in its history
    assert {r["removed_id"]: r["kept_id"] for r in res.extra["clusters"]} == {"r2": "r0"}
    assert near_duplicates(df, NearDedupeConfig(fields=["instruction", "input", "output"]), seed=0).kept.height == 1

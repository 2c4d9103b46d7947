"""The fast novelty filter must take exactly the decisions `rouge_score` takes (rougeL F-measure)."""

import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from dataforge.selfinstruct.novelty import NoveltyIndex, lcs_length, position_masks

WORDS = ("the a an of to in write explain give list name classify summarize story poem email about for and "
         "with short three five ways reasons why how what is are Tips tips TIPS running run runs ran e-mail "
         "don't 2 3.5 10 café naïve").split()


def sentence(rng: random.Random, lo: int = 0, hi: int = 16) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words) + rng.choice(["", ".", "?", "!", " :)", "..."])


def reference_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_the_dynamic_program():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.randint(0, 5) for _ in range(rng.randint(1, 70))]
        b = [rng.randint(0, 5) for _ in range(rng.randint(0, 70))]
        assert lcs_length(position_masks(a), len(a), b) == reference_lcs(a, b)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_scores_equal_rouge_score_on_hundreds_of_pairs(use_stemmer):
    rng = random.Random(11)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    for _ in range(300):
        a, b = sentence(rng), sentence(rng)
        index = NoveltyIndex(use_stemmer=use_stemmer)
        index.add(b)
        expected = scorer.score(a, b)["rougeL"].fmeasure
        got = index.nearest_above(a, threshold=1e-12)
        assert (got.score if got else 0.0) == expected


def test_near_copies_score_exactly_as_rouge_score():
    rng = random.Random(5)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    hits = 0
    for _ in range(300):
        base = sentence(rng, 4, 20).split()
        edited = list(base)
        for _ in range(rng.randint(0, 3)):
            k = rng.randrange(len(edited) + 1)
            op = rng.random()
            if op < 0.4 and edited:
                edited.pop(min(k, len(edited) - 1))
            elif op < 0.7:
                edited.insert(k, rng.choice(WORDS))
            elif edited:
                edited[min(k, len(edited) - 1)] = rng.choice(WORDS).upper()
        a, b = " ".join(base), " ".join(edited)
        index = NoveltyIndex(0.7)
        index.add(b)
        expected = scorer.score(a, b)["rougeL"].fmeasure
        got = index.nearest_above(a)
        assert (got is not None) == (expected >= 0.7)
        if got:
            hits += 1
            assert got.score == expected
    assert hits > 100  # the threshold region is really exercised


@pytest.mark.parametrize("seed", range(6))
def test_growing_pool_decisions_and_nearest_match_rouge_score(seed):
    """The Self-Instruct loop: check each candidate against the pool, add it when novel."""
    rng = random.Random(seed)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    threshold = rng.choice([0.5, 0.7, 0.9])
    index = NoveltyIndex(threshold)
    pool: list[str] = []
    for _ in range(120):
        cand = sentence(rng, 0, 12) if rng.random() < 0.6 or not pool else mutate(rng, rng.choice(pool))
        scores = [scorer.score(cand, p)["rougeL"].fmeasure for p in pool]
        got = index.nearest_above(cand)
        if scores and max(scores) >= threshold:
            best = int(np.argmax(scores))
            assert got is not None and (got.index, got.text, got.score) == (best, pool[best], scores[best])
        else:
            assert got is None
            index.add(cand)
            pool.append(cand)
    assert len(index) == len(pool)


def mutate(rng: random.Random, text: str) -> str:
    words = text.split() or ["x"]
    words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def test_empty_token_sides_are_never_similar():
    index = NoveltyIndex(0.7)
    index.add("!!! ???")
    index.add("日本語")
    assert index.nearest_above("!!! ???") is None
    assert index.nearest_above("日本語") is None
    assert index.nearest_above("anything at all") is None

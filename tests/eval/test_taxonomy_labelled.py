"""Precision and recall of every taxonomy label on a hand-labelled set of outputs.

tests/eval/fixtures/taxonomy_labelled.jsonl holds 650 model outputs written for this project, each
with the labels a person gives it by the definitions in dataforge/eval/taxonomy.py: at least 40
per label, and the outputs that tripped the old rules (English with URLs, titles such as "A
Comprehensive Review", domains like amazon.com, code, short answers, answers in other languages,
quotes an instruction asked for). Rows are scored by the real metric code, so low_overlap sees the
real ROUGE-L. evals/README.md reports the figures this test prints.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from dataforge.eval.metrics import GenerationScoring, score_generation
from dataforge.eval.taxonomy import LABELS

FIXTURE = Path(__file__).parent / "fixtures" / "taxonomy_labelled.jsonl"
# low_overlap's recall is low by design: a fluent answer about something else shares enough function
# words with the reference ("the", "and", "it is") to sit at ROUGE-L 0.15-0.25 (evals/README.md).
MIN_RECALL = {label: 0.9 for label in LABELS} | {"low_overlap": 0.5}


@pytest.fixture(scope="module")
def judged() -> list[tuple[dict, dict]]:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    by_format: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_format[json.dumps(row.get("format") or {"format": "free", "labels": []})].append(row)
    out = []
    for key, group in by_format.items():
        fmt = json.loads(key)
        scoring = GenerationScoring(metrics=["rouge"], format=fmt["format"], labels=fmt["labels"])
        out += list(zip(group, score_generation(group, scoring), strict=True))
    return out


def precision_recall(judged: list[tuple[dict, dict]], label: str) -> tuple[float, float, int]:
    tp = sum(label in got["labels"] and label in want["labels"] for want, got in judged)
    fp = sum(label in got["labels"] and label not in want["labels"] for want, got in judged)
    fn = sum(label not in got["labels"] and label in want["labels"] for want, got in judged)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp + fn


def test_every_label_has_forty_hand_labelled_outputs(judged):
    counts = {label: sum(label in want["labels"] for want, _ in judged) for label in LABELS}
    assert min(counts.values()) >= 40, counts
    assert sum(not want["labels"] for want, _ in judged) >= 150  # clean outputs, for precision


@pytest.mark.parametrize("label", LABELS)
def test_label_precision_and_recall_on_the_labelled_set(judged, label):
    precision, recall, n = precision_recall(judged, label)
    wrong = [(want["id"], got["labels"]) for want, got in judged if (label in got["labels"]) != (label in want["labels"])]
    print(f"{label}: n={n} precision={precision:.3f} recall={recall:.3f}")
    assert precision >= 0.9, wrong
    assert recall >= MIN_RECALL[label], wrong


def test_english_with_urls_titles_domains_and_code_is_never_another_language(judged):
    english = [(w, g) for w, g in judged if w["id"].startswith(("english-urls-code", "clean", "apology"))]
    assert len(english) >= 80
    assert [w["id"] for w, g in english if "wrong_language" in g["labels"]] == []


def test_short_answers_abstain_from_the_language_rule_and_say_why(judged):
    short = [(w, g) for w, g in judged if w["id"].startswith("short-answer")]
    assert short and all(g["abstained"].get("wrong_language") == "output too short" for _, g in short)
    judged_ones = [g for w, g in judged if w["id"].startswith(("clean", "other-language"))]
    assert all("wrong_language" not in g["abstained"] for g in judged_ones)


def test_quotes_an_instruction_asks_for_are_not_leakage_but_restating_it_is(judged):
    by_kind: dict[str, list[list[str]]] = defaultdict(list)
    for want, got in judged:
        by_kind[want["id"].rsplit("-", 1)[0]].append(got["labels"])
    assert len(by_kind["quote-requested"]) >= 15
    assert all("leakage" not in labels for labels in by_kind["quote-requested"])
    assert all("leakage" in labels for labels in by_kind["request-echoed"] + by_kind["input-echoed"])

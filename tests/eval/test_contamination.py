"""Scores on clean and overlapping items apart, from a build's contamination.jsonl or its train split."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from dataforge.errors import InputError
from dataforge.eval.contamination import build_texts, contamination_scores, overlapping_samples
from dataforge.eval.results import TaskResult, load_results, write_results
from dataforge.util.fingerprint import sha256_tree

SUITE = {"name": "s", "fingerprint": "f"}
# Questions shaped like a science quiz: long ones (a 13-word span can be shared) and short ones
# (under 13 words: matched whole, as the decontaminate stage does).
LONG = [f"In trial {i} a student heated {i + 2} grams of copper for {i + 5} minutes at {100 + i} degrees, then cooled "
        f"sample {i} in {i + 7} millilitres of water; what did trial {i} show?" for i in range(40)]
SHORT = [f"Why does the ice cube number {i} melt in the sun?" for i in range(40)]


def _results(path, correct, data=None):
    """A results folder of the quiz; with `data`, the items' source file as eval records it (origin
    file:line in each row, its sha256 in the manifest), so the check reads each question on its own."""
    rows = [{"sample_id": f"q{i}", "query": f"{q}\nA. heat\nB. cold\nAnswer:", "choices": ["A", "B"], "gold": 0,
             "metrics": {"acc": float(c)}} for i, (q, c) in enumerate(zip(LONG + SHORT, correct, strict=True))]
    manifest = {"model": "tiny", "suite": SUITE}
    if data is not None:
        data.write_text("".join(json.dumps({"question": q, "choices": ["heat", "cold"], "answer": 0}) + "\n"
                                for q in LONG + SHORT))
        for i, row in enumerate(rows):
            row["origin"] = f"{data}:{i + 1}"
        manifest["data"] = {"quiz": {"path": str(data), "sha256": sha256_tree(data)}}
    return load_results(write_results(path, manifest, {"quiz": TaskResult("multiple_choice", "general", rows)},
                                      seed=1, n_boot=100))


def _build(path, spans=None, train=None):
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"kind": "build"}))
    if spans is not None:
        (path / "contamination.jsonl").write_text("".join(
            json.dumps({"id": f"r{i}", "source": "web", "origin": f"web.jsonl:{i}", "eval_set": "quiz", "eval_index": i,
                        "span": s}) + "\n" for i, s in enumerate(spans)))
    if train is not None:
        (path / "splits").mkdir()
        pl.DataFrame({"instruction": train, "input": [""] * len(train), "output": ["ok"] * len(train)}) \
            .write_parquet(path / "splits" / "train.parquet")
    return path


def test_items_holding_a_span_of_contamination_jsonl_are_scored_apart_and_flagged(tmp_path):
    # items 0-9 (long) and 40-44 (short) overlap; they are all right, the clean ones mostly wrong
    overlap = set(range(10)) | set(range(40, 45))
    correct = [1 if i in overlap else int(i % 5 == 0) for i in range(80)]
    res = _results(tmp_path / "res", correct)
    spans = [" ".join(LONG[i].lower().replace(",", "").split()[3:16]) for i in range(10)]       # 13 words inside
    assert all(len(s.split()) == 13 and s in LONG[i].lower().replace(",", "") for i, s in enumerate(spans))
    spans += [SHORT[i - 40].lower().rstrip("?") for i in range(40, 45)]                             # whole short texts
    build = _build(tmp_path / "build", spans=spans)
    found = overlapping_samples(res, build_texts(build, "file"))
    assert found == {"quiz": {f"q{i}" for i in overlap}}
    [row] = contamination_scores(res, found, n_boot=2000)
    clean = [c for i, c in enumerate(correct) if i not in overlap]
    assert (row.n_clean, row.n_overlap) == (65, 15)
    assert row.clean == pytest.approx(np.mean(clean)) and row.overlap == 1.0
    assert row.diff == pytest.approx(1.0 - np.mean(clean)) and row.flagged
    # the two groups are resampled independently: the CI of the difference is the clean group's
    half = 1.96 * np.std(clean, ddof=1) / np.sqrt(len(clean))
    assert row.diff_ci[1] - row.diff_ci[0] == pytest.approx(2 * half, rel=0.2)


def test_the_ngram_check_against_a_train_split_finds_long_and_short_items_and_keeps_equal_scores_unflagged(tmp_path):
    overlap = {3, 7, 41, 45, 46}
    res = _results(tmp_path / "res", [int(i % 3 == 0) for i in range(80)], data=tmp_path / "quiz.jsonl")
    train = [f"Read this: {LONG[3]}. Then answer.", "notes " + " ".join(LONG[7].split()[2:17]) + " end",     # a 13-gram is shared
             f"Quiz: {SHORT[1]} Explain briefly.",                                 # a whole short question inside
             f"Two questions: {SHORT[5]} And: {SHORT[6]}",                           # two items in one record
             "The copper wire was heated over a flame.", "Why does ice melt?"]      # shorter shared bits: not overlap
    build = _build(tmp_path / "build", train=train)
    found = overlapping_samples(res, build_texts(build, "ngram"), mode="ngram")
    assert found == {"quiz": {f"q{i}" for i in overlap}}
    [row] = contamination_scores(res, found, n_boot=500)
    assert row.n_overlap == 5 and row.overlap == pytest.approx(2 / 5) and not row.flagged
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-m", "dataforge", "compare", str(res.path), str(res.path), "--n-boot", "200",
                          "--contamination", str(build), "--contamination-split", "train"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "0.4 (5)" in run.stdout and "(75)" in run.stdout


def test_a_build_without_contamination_jsonl_or_split_is_a_clear_error(tmp_path):
    build = _build(tmp_path / "build")
    with pytest.raises(InputError, match="contamination.jsonl: not found: the build ran no decontaminate stage"):
        build_texts(build, "file")
    with pytest.raises(InputError, match="train.parquet: not found: the build has no 'train' split"):
        build_texts(build, "ngram")
    with pytest.raises(InputError, match="not a build folder"):
        build_texts(tmp_path, "file")
    (build / "contamination.jsonl").write_text('{"span": "a b c"}\n{"id": 1}\n')
    with pytest.raises(InputError, match=r"contamination.jsonl:2: field 'span'"):
        build_texts(build, "file")

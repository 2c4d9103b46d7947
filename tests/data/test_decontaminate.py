"""Decontamination: n-gram overlap with eval texts, checked against a plain-Python overlap search."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import yaml

from dataforge.data.decontaminate import decontaminate, suite_eval_texts
from dataforge.data.record import RECORD_SCHEMA
from dataforge.errors import ConfigError, InputError

EIFFEL = ("The Eiffel Tower, in Paris, was completed in 1889 as the entrance arch to the World's Fair "
          "and it is still the most visited paid monument")


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {"source": "s", "origin_file": "train.jsonl", "system": "", "history": [], "instruction": "", "input": "",
            "output": ""}
    return pl.DataFrame([{**base, "id": f"r{i}", "origin_line": i + 1, **r} for i, r in enumerate(rows)],
                        schema=RECORD_SCHEMA)


def tokens(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def test_a_shared_13_word_span_removes_the_record_and_names_the_span():
    eval_sets = {"trivia": ["Who built it?", EIFFEL.upper()]}
    df = frame([
        {"instruction": "Tell me a fact.", "output": "Fun fact: " + EIFFEL.lower().replace(",", "") + "."},
        {"instruction": "Tell me another fact.", "output": "Paris is the capital of France."},
    ])
    res = decontaminate(df, eval_sets, ngram=13)
    assert res.kept["id"].to_list() == ["r1"]
    span = " ".join(tokens(EIFFEL)[:13])
    assert res.extra["contamination"] == [{"id": "r0", "source": "s", "origin": "train.jsonl:1", "eval_set": "trivia",
                                           "eval_index": 1, "span": span}]
    row = res.rejected.row(0, named=True)
    assert (row["stage"], row["reason"]) == ("decontaminate", "contaminated")
    assert row["detail"] == f"output shares the span '{span}' with eval set 'trivia' (text #1)"


def test_an_overlap_one_word_short_of_the_ngram_is_kept():
    twelve = " ".join(tokens(EIFFEL)[:12])
    df = frame([{"instruction": "x", "output": f"{twelve} and then something else entirely"}])
    assert decontaminate(df, {"trivia": [EIFFEL]}, ngram=13).kept.height == 1
    assert decontaminate(df, {"trivia": [EIFFEL]}, ngram=12).kept.height == 0


def test_spans_do_not_run_across_fields():
    toks = tokens(EIFFEL)
    df = frame([{"instruction": " ".join(toks[:7]), "output": " ".join(toks[7:14])}])
    assert decontaminate(df, {"trivia": [EIFFEL]}).kept.height == 1


def test_history_turns_and_system_prompts_are_checked():
    df = frame([
        {"instruction": "And then?", "output": "Nothing.",
         "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": EIFFEL}]},
        {"system": EIFFEL, "instruction": "q", "output": "a"},
    ])
    res = decontaminate(df, {"trivia": [EIFFEL]})
    assert res.kept.height == 0
    assert [d.split(" ")[0] for d in res.rejected["detail"]] == ["history", "system"]


def test_short_eval_texts_match_whole_and_very_short_ones_are_ignored():
    question = "What is the boiling point of water at sea level?"  # 10 words: matched whole
    df = frame([
        {"instruction": f"Answer this: {question} Explain.", "output": "100 degrees."},
        {"instruction": "What is the boiling point of water?", "output": "It depends on the pressure."},
        {"instruction": "Is it true?", "output": "Yes"},
    ])
    res = decontaminate(df, {"arc": [question, "Yes", "B"]}, ngram=13)
    assert res.rejected["id"].to_list() == ["r0"]
    assert res.extra["contamination"][0]["span"] == " ".join(tokens(question))


def test_matches_a_brute_force_overlap_search():
    """Random records with planted spans of random lengths: the removed set equals the records that
    share a 13-gram (or a whole eval text of 8-12 words) found by plain Python sets."""
    rng = np.random.default_rng(11)
    vocab = [f"v{i}" for i in range(400)]

    def text(n: int) -> list[str]:
        return [vocab[i] for i in rng.integers(len(vocab), size=n)]

    evals = [text(int(rng.integers(5, 40))) for _ in range(40)]
    rows = []
    for _ in range(300):
        out = text(int(rng.integers(5, 60)))
        if rng.random() < 0.3:
            src = evals[int(rng.integers(len(evals)))]
            k = int(rng.integers(6, 16))
            at = int(rng.integers(0, max(1, len(src) - k + 1)))
            pos = int(rng.integers(0, len(out) + 1))
            out = out[:pos] + src[at:at + k] + out[pos:]
        rows.append({"instruction": " ".join(text(int(rng.integers(3, 12)))), "output": " ".join(out)})
    df = frame(rows)

    grams = set()
    for e in evals:
        if len(e) >= 13:
            grams |= {tuple(e[i:i + 13]) for i in range(len(e) - 12)}
        elif len(e) >= 8:
            grams.add(tuple(e))

    def hit(field: str) -> bool:
        t = field.split()
        return any(tuple(t[i:i + n]) in grams for n in {len(g) for g in grams} for i in range(len(t) - n + 1))

    expected = {f"r{i}" for i, r in enumerate(rows) if hit(r["instruction"]) or hit(r["output"])}
    res = decontaminate(df, {"set": [" ".join(e) for e in evals]}, ngram=13)
    assert 10 < len(expected) < 200
    assert set(res.rejected["id"]) == expected
    assert res.kept.height + res.rejected.height == df.height
    for row in res.extra["contamination"]:
        assert row["span"] in " ".join(evals[row["eval_index"]])


def test_no_eval_texts_keeps_everything():
    df = frame([{"instruction": "q", "output": EIFFEL}])
    assert decontaminate(df, {}).kept.height == 1


def write_suite(tmp_path) -> str:
    """A suite of three tasks as eval reads them: a file, a folder of splits filtered by `where`,
    and a task on a run's own output (`${build}`), which is no fixed eval set."""
    (tmp_path / "data" / "qa").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    with open(tmp_path / "data" / "mc.jsonl", "w") as f:
        f.write(json.dumps({"question": "Which planet is red?", "choices": ["Mars", "Venus"], "gold": 0}) + "\n")
        f.write(json.dumps({"question": "Which gas do plants use?", "choices": {"text": ["CO2", "O2"]}, "gold": 1}) + "\n")
    pl.DataFrame({"prompt": ["Translate: good morning", "Translate: good night"], "reference": ["bonjour", "bonne nuit"],
                  "source": ["domain", "general"]}).write_parquet(tmp_path / "data" / "qa" / "validation.parquet")
    (tmp_path / "data" / "qa" / "train.jsonl").write_text(json.dumps({"prompt": "few-shot example", "source": "domain"}) + "\n")
    (tmp_path / "tasks" / "mc.yaml").write_text(yaml.safe_dump({
        "name": "planets", "type": "multiple_choice", "prompt": "Q: {question}", "choices": "choices", "gold": "gold",
        "data": {"path": "../data/mc.jsonl"}}))
    (tmp_path / "tasks" / "qa.yaml").write_text(yaml.safe_dump({
        "name": "translate", "type": "generation", "reference_field": "reference",
        "data": {"path": "../data/qa", "split": "validation", "where": {"source": "domain"}}}))
    (tmp_path / "tasks" / "own.yaml").write_text(yaml.safe_dump({"name": "own_test", "type": "generation",
                                                                  "data": {"path": "${build}/splits/test.parquet"}}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "mine", "vars": {"build": "runs/nowhere"},
                                     "tasks": [{"task": "tasks/mc.yaml", "tag": "domain"},
                                               {"task": "tasks/qa.yaml", "tag": "general"},
                                               {"task": "tasks/own.yaml", "tag": "domain"}]}))
    return str(suite)


def test_suite_eval_texts_are_the_records_eval_scores(tmp_path):
    """Only the scored split, filtered by `where`, as eval reads it; a run's own output is skipped."""
    from dataforge.eval.tasks import load_suite, read_records

    suite = write_suite(tmp_path)
    texts = suite_eval_texts(suite)
    assert texts == {
        "planets": ["Which planet is red?", "Mars", "Venus", "Which gas do plants use?", "CO2", "O2"],
        "translate": ["Translate: good morning", "bonjour", "domain"],
    }
    scored = load_suite(suite).tasks[1]
    assert [r["prompt"] for r in read_records(scored).rows] == ["Translate: good morning"]


def test_a_missing_suite_or_task_data_path_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="decontaminate.suite: suite 'nope' is neither a file nor a shipped suite"):
        suite_eval_texts("nope")
    suite = write_suite(tmp_path)
    (tmp_path / "tasks" / "qa.yaml").write_text(yaml.safe_dump({"name": "translate", "type": "generation",
                                                                 "data": {"hub": "x/y"}}))
    with pytest.raises(ConfigError, match="data.path: required to decontaminate"):
        suite_eval_texts(suite)
    (tmp_path / "tasks" / "qa.yaml").write_text(yaml.safe_dump({"name": "translate", "type": "generation",
                                                                 "data": {"path": "../data/qa"}}))
    with pytest.raises(InputError, match="qa: field 'data.path': task translate: data holds no test.jsonl"):
        suite_eval_texts(suite)
    (tmp_path / "tasks" / "qa.yaml").write_text(yaml.safe_dump({"name": "translate", "data": {"path": "x"}}))
    with pytest.raises(ConfigError, match="type"):
        suite_eval_texts(suite)

"""Scoring a predictions file with no model: reading, column mapping, errors, and the results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from dataforge.errors import InputError
from dataforge.eval.history import list_runs
from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.predictions import read_predictions, score_predictions
from dataforge.eval.results import load_results, sample_hash

FIXTURES = Path(__file__).parent / "fixtures"
TUNED_COLUMNS = {"prompt": "question", "prediction": "answer", "reference": "gold"}


@pytest.fixture(scope="module")
def scored_base(tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "base"
    return load_results(score_predictions(FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=out))


def test_jsonl_scores_equal_direct_rouge_and_sacrebleu(scored_base):
    raw = [json.loads(line) for line in (FIXTURES / "base_predictions.jsonl").read_text().splitlines()]
    preds, refs = [r["prediction"] for r in raw], [r["reference"] for r in raw]
    entry = scored_base.task("predictions")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)) / len(raw)
    assert entry["n"] == len(raw) == 20
    assert entry["metrics"]["rougeL"]["value"] == pytest.approx(expected, abs=1e-12)
    assert entry["metrics"]["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    assert entry["metrics"]["rougeL"]["ci_low"] < expected < entry["metrics"]["rougeL"]["ci_high"]
    assert scored_base.manifest["model_fingerprint"] == scored_base.manifest["predictions"]["sha256"]


def test_every_row_is_kept_with_its_line_and_labels(scored_base):
    rows = scored_base.rows("predictions")
    assert [r["origin_line"] for r in rows] == list(range(1, 21))
    by_line = {r["origin_line"]: r["labels"] for r in rows}
    assert by_line[3] == ["empty"] and by_line[5] == ["refusal"] and by_line[6] == ["wrong_language"]
    assert "leakage" in by_line[4] and "leakage" in by_line[20] and "repetition" in by_line[2]
    assert rows[0]["sample_id"] == sample_hash(json.loads((FIXTURES / "base_predictions.jsonl").open().readline())["prompt"])
    labels = scored_base.task("predictions")["labels"]
    assert labels["empty"] == 1 and sum(v for k, v in labels.items() if k != "clean") >= 10


def test_csv_with_a_column_mapping_and_multiline_cells():
    rows = read_predictions(FIXTURES / "tuned_predictions.csv", TUNED_COLUMNS)
    assert len(rows) == 20
    assert rows[0]["origin_line"] == 2 and rows[1]["origin_line"] == 9  # each prompt spans 7 file lines
    assert rows[-1]["finish_reason"] == "length"
    assert rows[0]["prompt"].endswith("### Response:\n")


def test_aliases_are_found_without_a_mapping(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "response": "a", "target": "a"}) + "\n")
    assert read_predictions(f)[0]["prediction"] == "a"


def test_an_ambiguous_or_missing_column_says_how_to_map_it(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "prediction": "a", "response": "b", "reference": "a"}) + "\n")
    with pytest.raises(InputError, match=r"both \['prediction', 'response'\].*--column prediction="):
        read_predictions(f)
    f.write_text(json.dumps({"prompt": "q", "output": "a", "reference": "a"}) + "\n")
    with pytest.raises(InputError, match=r"no prediction column.*--column prediction=<name>"):
        read_predictions(f)


def test_a_bad_record_names_file_line_and_field(tmp_path):
    f = tmp_path / "p.jsonl"
    good = json.dumps({"prompt": "q", "prediction": "a", "reference": "a"})
    f.write_text(good + "\n\n" + json.dumps({"prompt": "q2", "prediction": "a"}) + "\n")
    with pytest.raises(InputError, match=rf"{f}:3: field 'reference'"):
        read_predictions(f)
    f.write_text(good + "\n" + json.dumps({"prompt": "q2", "prediction": {"x": 1}, "reference": "a"}) + "\n")
    with pytest.raises(InputError, match=rf"{f}:2: field 'prediction': must be text"):
        read_predictions(f)
    f.write_text(good + "\n{not json\n")
    with pytest.raises(InputError, match=rf"{f}:2: not valid JSON"):
        read_predictions(f)
    c = tmp_path / "p.csv"
    c.write_text('prompt,prediction,reference\n"multi\nline",a,a\nq,a,a,extra\n')
    with pytest.raises(InputError, match=rf"{c}:4: the row has more cells"):
        read_predictions(c)


def test_null_predictions_are_scored_as_empty_outputs(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "prediction": None, "reference": "an answer here"}) + "\n"
                 + json.dumps({"prompt": "q2", "prediction": 42, "reference": "42"}) + "\n")
    res = load_results(score_predictions(f, None, GenerationScoring(format="number"), out=tmp_path / "res"))
    rows = res.rows("predictions")
    assert [r["labels"] for r in rows] == [["empty"], []]
    assert [r["metrics"]["exact_match"] for r in rows] == [0.0, 1.0]


def test_two_files_with_the_same_scoring_share_a_suite_and_a_different_scoring_does_not(tmp_path):
    a = load_results(score_predictions(FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=tmp_path / "a"))
    b = load_results(score_predictions(FIXTURES / "tuned_predictions.csv", TUNED_COLUMNS, GenerationScoring(),
                                       out=tmp_path / "b"))
    c = load_results(score_predictions(FIXTURES / "base_predictions.jsonl", None,
                                       GenerationScoring(metrics=["rouge"]), out=tmp_path / "c"))
    assert a.suite_fingerprint == b.suite_fingerprint != c.suite_fingerprint
    assert {r["sample_id"] for r in a.rows("predictions")} == {r["sample_id"] for r in b.rows("predictions")}


def test_unsupported_or_missing_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_predictions(tmp_path / "nope.jsonl")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported predictions file type"):
        read_predictions(tmp_path / "p.txt")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no records"):
        read_predictions(tmp_path / "e.jsonl")


def test_score_command_writes_results_records_history_and_reports_bad_input(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    db = tmp_path / "h.sqlite"
    run = subprocess.run([sys.executable, "-m", "dataforge", "score", str(FIXTURES / "tuned_predictions.csv"),
                          "-c", "prompt=question", "-c", "prediction=answer", "-c", "reference=gold",
                          "--set", "taxonomy.low_overlap.min_rouge_l=0.3", "-o", str(tmp_path / "res"),
                          "--label", "api-model", "--history-db", str(db), "--n-boot", "200"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    res = load_results(tmp_path / "res")
    assert res.task("predictions")["config"]["taxonomy"]["low_overlap"]["min_rouge_l"] == 0.3
    assert [r.label for r in list_runs(db)] == ["api-model"]
    bad = subprocess.run([sys.executable, "-m", "dataforge", "score", str(FIXTURES / "tuned_predictions.csv"),
                          "-o", str(tmp_path / "res2"), "--no-history"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "no prompt column" in bad.stderr and "Traceback" not in bad.stderr


def test_score_reads_nested_references_and_writes_under_runs_in_the_working_directory(tmp_path):
    data = tmp_path / "shared" / "outputs.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"prompt": f"Name a colour, {i}.", "prediction": "Blue.",
                                        "instances": [{"output": ["Blue.", "Red."][i % 2]}]}) + "\n" for i in range(4)))
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run([sys.executable, "-m", "dataforge", "score", str(data), "-c", "reference=instances[0].output",
                          "--no-history", "--n-boot", "100"], capture_output=True, text=True, cwd=work,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert not (data.parent / "outputs.eval").exists()
    res = load_results(work / "runs" / "outputs.eval")
    assert [r["reference"] for r in res.rows("predictions")] == ["Blue.", "Red.", "Blue.", "Red."]
    assert res.value("predictions", "exact_match") == 0.5
    assert res.task("predictions")["abstained"] == {"wrong_language": 4}     # "Blue." is too short to judge
    assert "could not judge (too short or unclear): wrong_language 4" in run.stdout


def test_a_nested_column_missing_from_a_record_names_the_line_and_the_path(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "prediction": "a", "instances": [{"output": "a"}]}) + "\n"
                 + json.dumps({"prompt": "q2", "prediction": "a", "instances": []}) + "\n")
    with pytest.raises(InputError, match=rf"{f}:2: field 'instances\[0\].output': the record has no such field"):
        read_predictions(f, {"reference": "instances[0].output"})
    with pytest.raises(InputError, match="mapped column 'outputs.text'"):
        read_predictions(f, {"reference": "outputs.text"})

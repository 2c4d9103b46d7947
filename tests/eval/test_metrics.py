"""Generation metrics: our evaluate modules against rouge-score and sacrebleu called directly."""

from __future__ import annotations

import evaluate
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from dataforge.config.base import validate_config
from dataforge.errors import ConfigError, InputError
from dataforge.eval.aggregate import aggregate
from dataforge.eval.metrics import GenerationScoring, metric_signatures, score_generation
from dataforge.eval.results import sample_hash
from dataforge.paths import evals_dir

PREDS = [
    "The cats are sitting on the mats.",
    "Hold the reset button for ten seconds.\nThen wait two minutes.",
    "Paris",
    "",
    "A completely unrelated sentence about bananas and weather.",
    "Open the app, choose Settings, then Firmware, and tap Update.",
]
REFS = [
    "The cat sat on the mat.",
    "Hold the reset button on the back for ten seconds.\nWait two minutes for the restart.",
    "paris",
    "Nothing here.",
    "Use the chat in the app to reach support.",
    "To update now, open the app, choose Settings, then Firmware, and tap Update.",
]


def _rows(preds=PREDS, refs=REFS):
    return [{"prompt": f"question {i}", "prediction": p, "reference": r} for i, (p, r) in
            enumerate(zip(preds, refs, strict=True))]


@pytest.fixture(scope="module")
def scored():
    return score_generation(_rows(), GenerationScoring())


def test_rouge_is_the_plain_mean_of_rouge_score_fmeasures_with_stemming(scored):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = [scorer.score(r, p) for p, r in zip(PREDS, REFS, strict=True)]
    for i, row in enumerate(scored):
        for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert row["metrics"][t] == pytest.approx(expected[i][t].fmeasure, abs=1e-12)
    task = aggregate("generation", scored)
    for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert task[t] == pytest.approx(sum(e[t].fmeasure for e in expected) / len(expected), abs=1e-12)
    # stemming is on: "cats"/"cat" and "mats"/"mat" match
    assert scored[0]["metrics"]["rouge1"] > rouge_scorer.RougeScorer(["rouge1"]).score(REFS[0], PREDS[0])["rouge1"].fmeasure


def test_rouge_aggregate_is_deterministic_across_calls():
    first = aggregate("generation", score_generation(_rows(), GenerationScoring(metrics=["rouge"])))
    second = aggregate("generation", score_generation(_rows(), GenerationScoring(metrics=["rouge"])))
    assert first == second


def test_bleu_and_chrf_task_values_equal_sacrebleu_corpus_scores(scored):
    task = aggregate("generation", scored)
    assert task["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert task["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-9)
    for row, p, r in zip(scored, PREDS, REFS, strict=True):
        assert row["metrics"]["bleu"] == pytest.approx(sacrebleu.sentence_bleu(p, [r]).score, abs=1e-9)
        assert row["metrics"]["chrf"] == pytest.approx(sacrebleu.sentence_chrf(p, [r]).score, abs=1e-9)


def test_chrf_plus_plus_and_bleu_tokenizer_settings_reach_sacrebleu():
    scoring = GenerationScoring(metrics=["bleu", "chrf"], chrf_word_order=2, bleu_tokenize="char")
    task = aggregate("generation", score_generation(_rows(), scoring))
    assert task["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS], word_order=2).score, abs=1e-9)
    assert task["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS], tokenize="char").score, abs=1e-9)


def test_signatures_record_the_sacrebleu_settings():
    sigs = metric_signatures(GenerationScoring(chrf_word_order=2))
    bleu = sacrebleu.BLEU()
    bleu.corpus_score(["a"], [["a"]])
    assert sigs["bleu"] == str(bleu.get_signature())
    assert "nw:2" in sigs["chrf"]
    assert "stem:yes" in sigs["rougeL"] and "case:ignore" in sigs["exact_match"]


def test_exact_match_normalizes_case_and_whitespace_only_by_default(scored):
    assert [r["metrics"]["exact_match"] for r in scored] == [0, 0, 1, 0, 0, 0]
    rows = _rows(["Paris.", " paris "], ["paris", "Paris"])
    assert [r["metrics"]["exact_match"] for r in score_generation(rows, GenerationScoring(metrics=["exact_match"]))] == [0, 1]
    loose = GenerationScoring(metrics=["exact_match"], exact_match={"ignore_punctuation": True})
    assert [r["metrics"]["exact_match"] for r in score_generation(rows, loose)] == [1, 1]


def test_metric_modules_load_through_evaluate_by_path():
    rouge = evaluate.load(str(evals_dir() / "metrics" / "rouge"), keep_in_memory=True)
    out = rouge.compute(predictions=PREDS, references=REFS)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS, strict=True)) / len(PREDS)
    assert out["rougeL"] == pytest.approx(expected, abs=1e-12)
    bleu = evaluate.load(str(evals_dir() / "metrics" / "bleu"), keep_in_memory=True)
    assert bleu.compute(predictions=PREDS, references=REFS)["score"] == pytest.approx(
        sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)


def test_unicode_rouge_tokenizer_scores_text_the_default_tokenizer_erases():
    rows = _rows(["我喜欢猫和狗"], ["我喜欢猫"])
    default = score_generation(rows, GenerationScoring(metrics=["rouge"]))[0]["metrics"]["rouge1"]
    uni = score_generation(rows, GenerationScoring(metrics=["rouge"], rouge_tokenizer="unicode"))[0]["metrics"]["rouge1"]
    assert default == 0.0  # rouge-score keeps only a-z0-9
    # 4 of the 4 reference characters appear among the 6 predicted ones: P = 4/6, R = 1
    assert uni == pytest.approx(2 * (4 / 6) * 1 / (4 / 6 + 1))


def test_rows_get_sample_ids_from_the_prompt_and_labels(scored):
    assert scored[0]["sample_id"] == sample_hash("question 0")
    assert scored[3]["labels"] == ["empty"]
    assert len(scored[0]["metric_stats"]["bleu"]) == 10 and len(scored[0]["metric_stats"]["chrf"]) == 18


def test_null_prediction_is_scored_as_empty_not_dropped():
    rows = [{"prompt": "q", "prediction": None, "reference": "an answer"}]
    out = score_generation(rows, GenerationScoring())
    assert len(out) == 1 and out[0]["prediction"] == "" and out[0]["labels"] == ["empty"]


def test_missing_reference_names_the_record_and_field():
    with pytest.raises(InputError, match=r"record 2: field 'reference'"):
        score_generation([{"prompt": "a", "prediction": "x", "reference": "y"}, {"prompt": "b", "prediction": "x"}],
                         GenerationScoring())


def test_label_format_needs_labels_and_labels_need_label_format():
    with pytest.raises(ConfigError, match="format 'label' needs"):
        validate_config(GenerationScoring, {"format": "label"})
    with pytest.raises(ConfigError, match="only used with format 'label'"):
        validate_config(GenerationScoring, {"labels": ["yes", "no"]})
    with pytest.raises(ConfigError, match="taxonomy.leakage.markers"):
        validate_config(GenerationScoring, {"taxonomy": {"leakage": {"markers": ["(unclosed"]}}})

"""Aggregation and the seeded bootstrap, checked against direct computations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sacrebleu

from dataforge.errors import InputError
from dataforge.eval.aggregate import TaskArrays, aggregate, bootstrap_ci, bootstrap_weights, higher_is_better
from dataforge.eval.metrics import GenerationScoring, score_generation


def _mean_rows(values, name="acc"):
    return [{"sample_id": str(i), "metrics": {name: v}} for i, v in enumerate(values)]


def _ppl_rows():
    rng = random.Random(0)
    rows = []
    for i in range(30):
        n_tok = rng.randint(5, 60)
        rows.append({"sample_id": str(i), "ll": -rng.uniform(1.0, 4.0) * n_tok, "n_tokens": n_tok,
                     "n_words": max(1, n_tok * 3 // 4), "n_bytes": n_tok * 4, "metrics": {}})
    return rows


def test_perplexity_metrics_come_from_sums_not_per_text_means():
    rows = _ppl_rows()
    ll = sum(r["ll"] for r in rows)
    got = aggregate("perplexity", rows)
    assert got["perplexity"] == pytest.approx(math.exp(-ll / sum(r["n_tokens"] for r in rows)))
    assert got["word_perplexity"] == pytest.approx(math.exp(-ll / sum(r["n_words"] for r in rows)))
    assert got["byte_perplexity"] == pytest.approx(math.exp(-ll / sum(r["n_bytes"] for r in rows)))
    assert got["bits_per_byte"] == pytest.approx(-ll / sum(r["n_bytes"] for r in rows) / math.log(2))
    per_text_mean = np.mean([math.exp(-r["ll"] / r["n_tokens"]) for r in rows])
    assert got["perplexity"] != pytest.approx(per_text_mean)


def test_mean_metrics_are_plain_means():
    values = [1, 0, 1, 1, 0, 1, 1, 0]
    assert aggregate("multiple_choice", _mean_rows(values)) == {"acc": pytest.approx(np.mean(values))}


def test_bootstrap_is_reproducible_with_a_seed_and_changes_with_another():
    rows = _mean_rows([random.Random(1).random() for _ in range(200)])
    a = bootstrap_ci("multiple_choice", rows, seed=7, n_boot=300)
    assert a == bootstrap_ci("multiple_choice", rows, seed=7, n_boot=300)
    assert a != bootstrap_ci("multiple_choice", rows, seed=8, n_boot=300)


def test_bootstrap_stderr_matches_the_analytic_standard_error_of_a_mean():
    rng = random.Random(3)
    values = [float(rng.random() < 0.3) for _ in range(400)]
    stderr, lo, hi = bootstrap_ci("multiple_choice", _mean_rows(values), seed=0, n_boot=2000)["acc"]
    p = np.mean(values)
    analytic = math.sqrt(p * (1 - p) / len(values))
    assert stderr == pytest.approx(analytic, rel=0.1)
    assert lo < p < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * analytic, rel=0.15)


def test_weights_are_the_same_resamples_whatever_the_chunking(monkeypatch):
    whole = np.vstack(list(bootstrap_weights(50, seed=5, n_boot=40)))
    import dataforge.eval.aggregate as agg

    monkeypatch.setattr(agg, "_MAX_CELLS", 50 * 7)
    chunked = list(agg.bootstrap_weights(50, seed=5, n_boot=40))
    assert len(chunked) > 1
    np.testing.assert_array_equal(whole, np.vstack(chunked))
    assert (whole.sum(axis=1) == 50).all()


def test_a_resample_of_corpus_bleu_equals_sacrebleu_on_the_resampled_corpus():
    preds = ["the cat sat on the mat", "a dog barked loudly at night", "hello world", "the quick brown fox",
             "router lights blink orange", "open the app and tap update"]
    refs = ["the cat sat on a mat", "the dog barked at night", "hello there world", "a quick brown fox jumps",
            "the router light blinks orange", "open the app, then tap update"]
    rows = score_generation([{"prompt": str(i), "prediction": p, "reference": r}
                             for i, (p, r) in enumerate(zip(preds, refs, strict=True))],
                            GenerationScoring(metrics=["bleu", "chrf"]))
    arrays = TaskArrays("generation", rows)
    picks = [0, 0, 2, 5, 5, 5]
    weights = np.bincount(picks, minlength=len(rows)).astype(float)[None, :]
    got = arrays.values(weights)
    hyp, ref = [preds[i] for i in picks], [refs[i] for i in picks]
    assert got["bleu"][0] == pytest.approx(sacrebleu.corpus_bleu(hyp, [ref]).score, abs=1e-9)
    assert got["chrf"][0] == pytest.approx(sacrebleu.corpus_chrf(hyp, [ref]).score, abs=1e-9)


def test_metric_direction():
    assert not higher_is_better("perplexity") and not higher_is_better("bits_per_byte")
    assert higher_is_better("acc") and higher_is_better("rougeL") and higher_is_better("bleu")


def test_rows_with_different_metrics_are_an_input_error():
    rows = [{"sample_id": "a", "metrics": {"acc": 1}}, {"sample_id": "b", "metrics": {"acc_norm": 1}}]
    with pytest.raises(InputError, match="record 2: field 'metrics'"):
        aggregate("multiple_choice", rows)
    with pytest.raises(InputError, match="must be a number"):
        aggregate("multiple_choice", [{"sample_id": "a", "metrics": {"acc": None}}])

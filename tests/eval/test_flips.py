"""Samples that flipped between base and tune, in compare and in the report; the noise floor beside
the deltas."""

from __future__ import annotations

import pytest

from dataforge.errors import InputError
from dataforge.eval.flips import flips
from dataforge.eval.noise import noise_floor
from dataforge.eval.report import build_report, render_markdown
from dataforge.eval.results import TaskResult, load_results, write_results

SUITE = {"name": "s", "fingerprint": "f"}


def _mc(correct):
    return [{"sample_id": f"mc{i}", "query": f"Which planet is number {i}?", "choices": ["Mars", "Venus"], "gold": 0, "pred": 0 if c else 1,
             "metrics": {"acc": float(c)}} for i, c in enumerate(correct)]


def _gen(predictions):
    return [{"prompt": f"Capital of country {i}?", "reference": "Paris", "prediction": p,
             "metrics": {"exact_match": float(p == "Paris"), "rougeL": 0.5}} for i, p in enumerate(predictions)]


def _ppl(n):
    return [{"text": f"document {i}", "ll": -10.0 - i, "n_tokens": 5, "n_words": 4, "n_bytes": 20, "metrics": {}}
            for i in range(n)]


def _write(path, mc, gen, model="tiny", label=None):
    tasks = {"mc": TaskResult("multiple_choice", "general", _mc(mc)),
             "qa": TaskResult("generation", "domain", _gen(gen), primary_metric="exact_match"),
             "ppl": TaskResult("perplexity", "general", _ppl(4))}
    manifest = {"model": model, "adapter": label, "model_fingerprint": f"{model}-{label}", "suite": SUITE}
    return load_results(write_results(path, manifest, tasks, seed=1, n_boot=100))


def test_right_to_wrong_and_wrong_to_right_are_listed_per_task(tmp_path):
    base = _write(tmp_path / "base", [1, 1, 0, 0, 1], ["Paris", "Lyon", "Paris"])
    tuned = _write(tmp_path / "tuned", [1, 0, 1, 0, 0], ["Paris", "Paris", "Nice"], label="t")
    found = {f.task: f for f in flips(base, tuned)}
    assert set(found) == {"mc", "qa"}      # perplexity has no right or wrong
    assert [x.prompt for x in found["mc"].broken] == ["Which planet is number 1?", "Which planet is number 4?"]
    assert [x.prompt for x in found["mc"].fixed] == ["Which planet is number 2?"]
    assert (found["mc"].broken[0].base_output, found["mc"].broken[0].tuned_output, found["mc"].broken[0].reference) == \
        ("Mars", "Venus", "Mars")
    assert [(x.base_output, x.tuned_output) for x in found["qa"].broken] == [("Paris", "Nice")]
    assert [(x.base_output, x.tuned_output) for x in found["qa"].fixed] == [("Lyon", "Paris")]

    md = render_markdown(build_report([base.path, tuned.path], n_boot=200), "assets")
    assert "## Flipped samples, " in md and "| mc | acc | 5 | 2 | 1 |" in md and "| qa | exact_match | 3 | 1 | 1 |" in md
    assert "### mc: right → wrong (2)" in md and "Which planet is number 4?" in md


def test_the_noise_floor_is_the_spread_of_the_base_over_its_reruns_shown_beside_each_delta(tmp_path):
    base = _write(tmp_path / "base", [1, 1, 0, 0, 1], ["Paris", "Lyon", "Paris"])
    rerun1 = _write(tmp_path / "base-seed1", [1, 1, 0, 0, 1], ["Paris", "Paris", "Paris"])
    rerun2 = _write(tmp_path / "base-seed2", [1, 1, 0, 0, 1], ["Lyon", "Lyon", "Paris"])
    tuned = _write(tmp_path / "tuned", [1, 1, 1, 1, 1], ["Paris", "Paris", "Paris"], label="t")
    spreads = noise_floor(base, [rerun1, rerun2])
    qa = spreads["qa", "exact_match"]
    assert qa.values == pytest.approx([2 / 3, 1.0, 1 / 3]) and qa.spread == pytest.approx(2 / 3)
    assert qa.sd == pytest.approx(1 / 3)
    assert spreads["mc", "acc"].spread == 0
    md = render_markdown(build_report([base.path, tuned.path], n_boot=200, noise=[rerun1.path, rerun2.path]), "a")
    row_qa = next(line for line in md.splitlines() if line.startswith("| qa | domain | exact_match *"))
    row_mc = next(line for line in md.splitlines() if line.startswith("| mc | general | acc *"))
    assert "| 0.6667 ~ |" in row_qa         # +0.33 is inside the spread of re-runs: marked
    assert "| 0 |" in row_mc and "~" not in row_mc
    with pytest.raises(InputError, match="not a re-run of the base"):
        noise_floor(base, [tuned])

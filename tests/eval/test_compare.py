"""Paired compare, forgetting and the CI gate, checked against direct computations."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from dataforge.errors import InputError
from dataforge.eval.aggregate import TaskArrays, bootstrap_weights, interval
from dataforge.eval.compare import GateConfig, check_gate, compare_results, paired_bootstrap
from dataforge.eval.results import TaskResult, load_results, write_results

SUITE = {"name": "reg", "fingerprint": "abc123"}


def _mc(values):
    return [{"prompt": f"question {i}", "metrics": {"acc": float(v)}} for i, v in enumerate(values)]


def _ppl(mean_nll, n=40, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tokens = 20 + i % 7
        rows.append({"text": f"document {i}", "ll": -tokens * (mean_nll + rng.uniform(-0.2, 0.2)),
                     "n_tokens": tokens, "n_words": tokens - 3, "n_bytes": tokens * 4, "metrics": {}})
    return rows


def _write(path, tasks, suite=SUITE, gate=None, label=None):
    manifest = {"model": "tiny", "adapter": label, "label": label, "suite": {**suite, **({"gate": gate} if gate else {})}}
    return load_results(write_results(path, manifest, tasks, seed=1, n_boot=300))


def _correlated(n=300, seed=0):
    """Per-sample scores of a base and a tune that share most of their per-sample difficulty."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, n)
    base = np.clip(difficulty + rng.normal(0, 0.05, n), 0, 1)
    tuned = np.clip(difficulty + 0.03 + rng.normal(0, 0.05, n), 0, 1)
    return base, tuned


def test_paired_interval_is_that_of_the_mean_difference_and_narrower_than_unpaired():
    base, tuned = _correlated()
    deltas, _ = paired_bootstrap("multiple_choice", _mc(base), _mc(tuned), seed=3, n_boot=2000)
    d = deltas["acc"]
    diff = tuned - base
    assert d.delta == pytest.approx(diff.mean())
    analytic = diff.std(ddof=1) / math.sqrt(len(diff))
    assert (d.ci_high - d.ci_low) == pytest.approx(2 * 1.96 * analytic, rel=0.15)
    # an unpaired interval (independent resamples of each run) is several times wider here
    unpaired = np.concatenate([w @ tuned / len(tuned) for w in bootstrap_weights(len(tuned), 11, 2000)]) - \
        np.concatenate([w @ base / len(base) for w in bootstrap_weights(len(base), 12, 2000)])
    _, lo, hi = interval(unpaired)
    assert (hi - lo) > 3 * (d.ci_high - d.ci_low)
    assert d.significant and d.verdict == "improved" and d.p_value < 0.01


def test_identical_runs_have_a_zero_delta_and_no_change():
    rows = _mc([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    d = paired_bootstrap("multiple_choice", rows, [dict(r) for r in rows], seed=0, n_boot=500)[0]["acc"]
    assert (d.delta, d.ci_low, d.ci_high, d.p_value, d.verdict) == (0, 0, 0, 1.0, "unchanged")


def test_samples_pair_by_prompt_hash_whatever_their_order(tmp_path):
    base_vals, tuned_vals = _correlated(60, seed=4)
    base = _write(tmp_path / "a", {"t": TaskResult("multiple_choice", "domain", _mc(base_vals))})
    shuffled = _mc(tuned_vals)
    random.Random(0).shuffle(shuffled)
    extra = [{"prompt": "only in the tune", "metrics": {"acc": 1.0}}]
    tuned = _write(tmp_path / "b", {"t": TaskResult("multiple_choice", "domain", shuffled + extra)})
    comp = compare_results(base, tuned, seed=2, n_boot=400)
    t = comp.tasks[0]
    assert (t.n_paired, t.n_base_only, t.n_tuned_only) == (60, 0, 1)
    assert t.deltas["acc"].delta == pytest.approx(tuned_vals.mean() - base_vals.mean())
    in_order = _write(tmp_path / "c", {"t": TaskResult("multiple_choice", "domain", _mc(tuned_vals))})
    same = compare_results(base, in_order, seed=2, n_boot=400).tasks[0].deltas["acc"]
    assert (same.ci_low, same.ci_high) == pytest.approx((t.deltas["acc"].ci_low, t.deltas["acc"].ci_high))


@pytest.fixture()
def forgetting_runs(tmp_path):
    """A base and a tune that gains on the domain task, forgets on one general task, and gets a higher
    (worse) perplexity on the general corpus."""
    rng = random.Random(5)
    dom_b = [float(rng.random() < 0.4) for _ in range(200)]
    dom_t = [1.0 if v else float(rng.random() < 0.5) for v in dom_b]
    gen_b = [float(rng.random() < 0.7) for _ in range(200)]
    gen_t = [v if rng.random() < 0.85 else 0.0 for v in gen_b]
    base = _write(tmp_path / "base", {
        "domain": TaskResult("multiple_choice", "domain", _mc(dom_b)),
        "general_mc": TaskResult("multiple_choice", "general", _mc(gen_b)),
        "general_ppl": TaskResult("perplexity", "general", _ppl(2.0))}, label="base")
    tuned = _write(tmp_path / "tuned", {
        "domain": TaskResult("multiple_choice", "domain", _mc(dom_t)),
        "general_mc": TaskResult("multiple_choice", "general", _mc(gen_t)),
        "general_ppl": TaskResult("perplexity", "general", _ppl(2.3))}, label="tuned")
    return base, tuned, (dom_b, dom_t, gen_b, gen_t)


def test_forgetting_reports_retention_and_sets_general_change_beside_domain_gain(forgetting_runs):
    base, tuned, (dom_b, dom_t, gen_b, gen_t) = forgetting_runs
    comp = compare_results(base, tuned, seed=0, n_boot=500)
    by_task = {r.task: r for r in comp.forgetting.general}
    mc = by_task["general_mc"]
    assert mc.retention == pytest.approx(np.mean(gen_t) / np.mean(gen_b))
    assert mc.ci_low < mc.retention < mc.ci_high and mc.delta.verdict == "regressed"
    ppl = by_task["general_ppl"]
    assert ppl.delta.metric == "bits_per_byte"
    assert ppl.delta.delta > 0 and ppl.delta.verdict == "regressed"  # higher bits per byte is worse
    assert ppl.retention == pytest.approx(ppl.delta.base / ppl.delta.tuned) and ppl.retention < 1
    expected_change = np.mean([mc.retention - 1, ppl.retention - 1])
    assert comp.forgetting.general_change.value == pytest.approx(expected_change)
    assert comp.forgetting.domain_gain.value == pytest.approx(np.mean(dom_t) / np.mean(dom_b) - 1)
    s = comp.forgetting.general_change
    assert s.ci_low < s.value < s.ci_high < 0


def test_gate_fails_on_regression_forgetting_and_rules_in_their_own_direction(forgetting_runs):
    base, tuned, _ = forgetting_runs
    comp = compare_results(base, tuned, seed=0, n_boot=500)
    assert check_gate(comp, GateConfig()) == []
    failures = check_gate(comp, GateConfig(max_regression=0.05))
    assert any(f.startswith("general_mc/acc regressed") for f in failures)
    assert any(f.startswith("general_ppl/bits_per_byte regressed") for f in failures)
    assert check_gate(comp, GateConfig(max_regression=0.5)) == []
    assert any("forgets more than" in f for f in check_gate(comp, GateConfig(max_forgetting=0.01)))
    assert check_gate(comp, GateConfig(max_forgetting=0.9)) == []
    rules = GateConfig(rules=[{"task": "general_ppl", "metric": "perplexity", "max_drop": 0.1},
                              {"task": "domain", "metric": "acc", "min": 0.99}])
    failures = check_gate(comp, rules)
    assert len(failures) == 2 and "general_ppl/perplexity got worse" in failures[0] and "below min" in failures[1]


def _cli(*args, columns: int = 200):
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "dataforge", *map(str, args)], capture_output=True, text=True, env=env)


def test_compare_command_exits_1_when_the_gate_breaks_and_0_when_it_holds(forgetting_runs, tmp_path):
    base, tuned, _ = forgetting_runs
    failed = _cli("compare", base.path, tuned.path, "--n-boot", 200, "--max-forgetting", 0.01, "--json",
                  tmp_path / "c.json", "--history-db", tmp_path / "h.sqlite")
    assert failed.returncode == 1, failed.stderr
    assert "gate:" in failed.stdout and "general_mc" in failed.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["gate"]["failures"] and data["tasks"]["general_ppl"]["metrics"]["perplexity"]["verdict"] == "regressed"
    passed = _cli("compare", base.path, tuned.path, "--n-boot", 200, "--max-forgetting", 0.9,
                  "--history-db", tmp_path / "h.sqlite")
    assert passed.returncode == 0 and "gate passed" in passed.stdout


def test_gate_thresholds_recorded_with_the_suite_apply_without_flags(tmp_path):
    gate = [{"task": "t", "metric": "acc", "max_drop": 0.05}]
    base = _write(tmp_path / "a", {"t": TaskResult("multiple_choice", "general", _mc([1] * 30))}, gate=gate)
    tuned = _write(tmp_path / "b", {"t": TaskResult("multiple_choice", "general", _mc([1] * 20 + [0] * 10))}, gate=gate)
    run = _cli("compare", base.path, tuned.path, "--n-boot", 200, "--history-db", tmp_path / "h.sqlite")
    assert run.returncode == 1 and "t/acc got worse by 0.3333" in run.stdout


def test_results_of_different_suites_are_refused_naming_both_folders_and_suites(tmp_path):
    a = _write(tmp_path / "a", {"t": TaskResult("multiple_choice", "domain", _mc([1, 0]))})
    b = _write(tmp_path / "b", {"t": TaskResult("multiple_choice", "domain", _mc([1, 0]))},
               suite={"name": "other", "fingerprint": "fff999"})
    with pytest.raises(InputError) as err:
        compare_results(a, b)
    for part in (str(a.path), str(b.path), "'reg'", "'other'", "abc123", "fff999"):
        assert part in str(err.value)
    run = _cli("compare", a.path, b.path, "--history-db", tmp_path / "h.sqlite")
    assert run.returncode == 2 and "different suites" in run.stderr and "Traceback" not in run.stderr


def test_no_shared_samples_and_non_results_folders_are_input_errors(tmp_path):
    a = _write(tmp_path / "a", {"t": TaskResult("multiple_choice", "domain", _mc([1, 0]))})
    other = [{"prompt": "different", "metrics": {"acc": 1.0}}]
    b = _write(tmp_path / "b", {"t": TaskResult("multiple_choice", "domain", other)})
    with pytest.raises(InputError, match="no sample of .* matches"):
        compare_results(a, b)
    with pytest.raises(InputError, match="no manifest.json"):
        load_results(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "manifest.json").write_text('{"kind": "build"}')
    with pytest.raises(InputError, match="manifest kind is 'build'"):
        load_results(tmp_path / "build")


def test_task_arrays_and_paired_replicates_reaggregate_perplexity_from_sums():
    rows_a, rows_b = _ppl(2.0, n=10), _ppl(2.5, n=10, seed=1)
    deltas, reps = paired_bootstrap("perplexity", rows_a, rows_b, seed=0, n_boot=50)
    assert deltas["perplexity"].base == pytest.approx(TaskArrays("perplexity", rows_a).point()["perplexity"])
    ra, rb = reps["perplexity"]
    assert ra.shape == rb.shape == (50,) and (rb > ra).all()


def test_compare_stays_readable_in_an_80_column_log(forgetting_runs, tmp_path):
    """CI logs are 80 columns: every task, metric and interval must still be printed whole."""
    base, tuned, _ = forgetting_runs
    comp = compare_results(base, tuned, seed=0, n_boot=200)
    out = _cli("compare", base.path, tuned.path, "--n-boot", 200, "--seed", 0, "--history-db", tmp_path / "h.sqlite",
               columns=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    for title in ("domain (domain)", "general_mc (general)", "general_ppl (general)"):
        assert any(line.strip() == title for line in lines), title
    d = comp.tasks[[t.task for t in comp.tasks].index("general_ppl")].deltas["bits_per_byte"]
    row = next(line for line in lines if line.lstrip().startswith("bits_per_byte *"))
    assert f"{d.delta:+.4g}" in row
    assert f"[{d.ci_low:+.4g}, {d.ci_high:+.4g}]" in lines[lines.index(row) + 1]


@pytest.mark.parametrize("adapter, label", [("runs/train_lora/adapter", "train_lora/adapter"),
                                            ("runs/my-tune/", "my-tune"), (None, "tiny")])
def test_a_run_without_a_label_is_named_after_its_tune(tmp_path, adapter, label):
    manifest = {"model": "tiny", "adapter": adapter, "suite": SUITE}
    tasks = {"t": TaskResult("multiple_choice", "general", _mc([1, 0, 1]))}
    assert load_results(write_results(tmp_path / "r", manifest, tasks, seed=1, n_boot=10)).label == label


def test_two_deployments_are_compared_under_their_own_names_with_no_general_suite_change(tmp_path):
    """Two runs that are not a base and its tune (two prompts, two servers), with domain tasks only."""
    a = _write(tmp_path / "a", {"qa": TaskResult("multiple_choice", "domain", _mc([0, 1, 0, 0, 1, 0] * 10))},
               label="prompt-v1")
    b = _write(tmp_path / "b", {"qa": TaskResult("multiple_choice", "domain", _mc([1, 1, 0, 1, 1, 1] * 10))},
               label="prompt-v2")
    out = _cli("compare", a.path, b.path, "--n-boot", 200, "--history-db", tmp_path / "h.sqlite")
    assert out.returncode == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if "metric" in line and "p" in line)
    assert "prompt-v1" in header and "prompt-v2" in header
    assert "base" not in header and "tuned" not in header
    assert "general-suite" not in out.stdout

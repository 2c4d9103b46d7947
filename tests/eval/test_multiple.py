"""Holm and Benjamini-Hochberg adjusted p-values, and the paired-bootstrap p-value they adjust."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dataforge.eval.compare import GateConfig, check_gate, compare_results, paired_bootstrap
from dataforge.eval.multiple import adjust_p_values
from dataforge.eval.results import TaskResult, load_results, write_results


def test_holm_and_bh_match_a_hand_computed_example():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then running max
    assert adjust_p_values(p, "holm")[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04, then running min from the top
    assert adjust_p_values(p, "bh")[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert np.isnan(adjust_p_values(p, "holm")[4])          # a test that could not run is not counted
    assert adjust_p_values([0.6, 0.9], "holm") == pytest.approx([1.0, 1.0])    # capped at 1
    assert adjust_p_values(p, "none")[:4] == pytest.approx(p[:4])


def test_holm_and_bh_match_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(0).uniform(0, 0.2, 30)
    assert adjust_p_values(p, "holm") == pytest.approx(multipletests(p, method="holm")[1])
    assert adjust_p_values(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1])


def _mc(values):
    return [{"prompt": f"question {i}", "metrics": {"acc": float(v)}} for i, v in enumerate(values)]


def _pair(shift: float, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.2, n)
    return base, base + shift + rng.normal(0, 0.1, n)


def test_the_paired_bootstrap_p_value_agrees_with_a_paired_t_test():
    """p = min(1, 2 min(P*(d <= 0), P*(d >= 0))) over the bootstrap replicates of the mean difference;
    with 400 samples it is the paired t-test's p to within bootstrap resolution."""
    for shift in (0.006, 0.012):
        base, tuned = _pair(shift)
        d = paired_bootstrap("multiple_choice", _mc(base), _mc(tuned), seed=1, n_boot=10000)[0]["acc"]
        t_p = stats.ttest_rel(tuned, base).pvalue
        assert d.p_value == pytest.approx(t_p, abs=0.01), (shift, d.p_value, t_p)


def test_a_gate_over_many_tasks_judges_the_adjusted_p_values(tmp_path):
    """One task regresses with p ~ 0.02; nine do not change. Unadjusted, the gate fails; with Holm
    over the 10 task x metric tests the regression is no longer significant and the gate passes."""
    tasks_a, tasks_b = {}, {}
    for k in range(10):
        base, tuned = _pair(-0.01, seed=k)
        if k:
            tuned = base.copy()      # unchanged: p = 1
        tasks_a[f"t{k}"] = TaskResult("multiple_choice", "domain", _mc(base))
        tasks_b[f"t{k}"] = TaskResult("multiple_choice", "domain", _mc(tuned))
    suite = {"name": "s", "fingerprint": "f"}
    a = load_results(write_results(tmp_path / "a", {"model": "m", "suite": suite}, tasks_a, seed=1, n_boot=200))
    b = load_results(write_results(tmp_path / "b", {"model": "m", "suite": suite}, tasks_b, seed=1, n_boot=200))
    comp = compare_results(a, b, n_boot=2000)
    d = comp.tasks[0].primary_delta
    assert 0.005 < d.p_value < 0.05 and d.verdict == "regressed"
    gate = GateConfig(max_regression=0.0)
    assert check_gate(comp, gate) and d.p_adjusted is None
    holm = GateConfig(max_regression=0.0, correction="holm")
    assert check_gate(comp, holm) == []
    assert d.p_adjusted == pytest.approx(min(1.0, 10 * d.p_value)) and d.verdict == "unchanged"
    comp.apply_correction("bh")      # the smallest of 10 p-values, the others 1: BH also multiplies it by 10
    assert d.p_adjusted == pytest.approx(min(1.0, 10 * d.p_value)) and comp.correction == "bh"

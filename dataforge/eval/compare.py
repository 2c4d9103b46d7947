"""Compare two results folders: paired-bootstrap deltas, forgetting, backward transfer and the CI gate.

The bootstrap is *paired*: both runs are matched on the same samples (by sample_id, a hash of the
prompt) and every replicate resamples the same rows from both, so the interval is that of the
difference, not of two independent means (lm-eval's comparator uses an unpaired z-test, which
overstates the uncertainty when per-sample scores are correlated, as they are between a base model
and its tune). Replicates re-aggregate with `dataforge.eval.aggregate`, so corpus BLEU and
perplexity are resampled correctly too.

Signs: a delta is tuned - base in the metric's units; "regressed" and "improved" are judged in the
metric's own direction (lower perplexity is better). Suite-level summaries average *relative*
changes, because tasks report in different units: retention is tuned / base (base / tuned when
lower is better), and a relative change is retention - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from dataforge.config.base import StrictModel, validate_config
from dataforge.errors import InputError
from dataforge.eval.aggregate import TaskArrays, bootstrap_weights, higher_is_better, interval, task_seed
from dataforge.eval.history import RunScores
from dataforge.eval.multiple import Correction, adjust_p_values
from dataforge.eval.results import Results
from dataforge.eval.task_types import get_task_type
from dataforge.eval.tasks import GateRule
from dataforge.eval.taxonomy import label_transitions


@dataclass
class MetricDelta:
    metric: str
    base: float
    tuned: float
    delta: float                # tuned - base
    ci_low: float
    ci_high: float
    p_value: float              # two-sided, from the bootstrap distribution of the delta (see `_p_value`)
    higher_is_better: bool
    p_adjusted: float | None = None     # after the comparison's multiple-testing correction (None: none applied)
    alpha: float = 0.05                 # 1 - confidence: the level adjusted p-values are judged at

    @property
    def significant(self) -> bool:
        """The paired CI excludes 0; under a correction, the adjusted p-value is <= alpha instead."""
        if self.p_adjusted is not None:
            return bool(self.p_adjusted <= self.alpha)
        return bool(self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict(self) -> str:
        """improved / regressed (significant, in the metric's direction) or unchanged."""
        if not self.significant:
            return "unchanged"
        return "improved" if (self.delta > 0) == self.higher_is_better else "regressed"

    @property
    def relative(self) -> float:
        """Relative change in the good direction: retention - 1 (nan when the base is 0)."""
        return float(_retention(np.array([self.base]), np.array([self.tuned]), self.higher_is_better)[0] - 1)


@dataclass
class TaskComparison:
    task: str
    type: str
    tag: str
    primary: str
    n_paired: int
    n_base_only: int
    n_tuned_only: int
    deltas: dict[str, MetricDelta]
    base_reps: np.ndarray = field(repr=False)     # primary metric's replicates, same resamples for both
    tuned_reps: np.ndarray = field(repr=False)
    labels: dict[str, dict[str, int]] | None = None

    @property
    def primary_delta(self) -> MetricDelta:
        return self.deltas[self.primary]


@dataclass
class Retention:
    task: str
    delta: MetricDelta
    retention: float
    ci_low: float
    ci_high: float


@dataclass
class Summary:
    """A mean relative change over a group of tasks with its bootstrap interval (fractions, 0.01 = 1 %)."""

    value: float
    ci_low: float
    ci_high: float
    n_tasks: int


@dataclass
class Forgetting:
    general: list[Retention]
    general_change: Summary | None      # mean relative change over general tasks (negative = forgetting)
    domain_gain: Summary | None         # mean relative change over domain tasks


@dataclass
class Comparison:
    base: Results
    tuned: Results
    seed: int
    n_boot: int
    confidence: float
    tasks: list[TaskComparison]
    forgetting: Forgetting
    only_base: list[str]
    only_tuned: list[str]
    correction: Correction = "none"

    def apply_correction(self, method: Correction) -> None:
        """Adjust the p-values of every task x metric delta as one family (Holm or Benjamini-Hochberg);
        verdicts, the gate and the report then judge significance by the adjusted values."""
        deltas = [d for t in self.tasks for d in t.deltas.values()]
        adjusted = adjust_p_values([d.p_value for d in deltas], method)
        for d, p in zip(deltas, adjusted, strict=True):
            d.p_adjusted = None if method == "none" else float(p)
            d.alpha = 1.0 - self.confidence
        self.correction = method


def _retention(base: np.ndarray, tuned: np.ndarray, hib: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = tuned / base if hib else base / tuned
    return np.where(np.isfinite(ratio), ratio, np.nan)


def _p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no change": twice the smaller share of replicates on either side
    of 0, p = min(1, 2 min(P*(d <= 0), P*(d >= 0))). It is the smallest alpha at which the percentile
    interval of level 1 - alpha would just reach 0, so p < alpha agrees with the CI excluding 0; its
    resolution is 1 / n_boot (0 means below that)."""
    if not len(deltas):
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))


def check_same_suite(runs: list[Results]) -> None:
    """Results of different suites cannot be paired; name every folder and suite involved."""
    first = runs[0]
    for other in runs[1:]:
        if other.suite_fingerprint != first.suite_fingerprint:
            raise InputError(
                f"results come from different suites: {first.path} (suite '{first.suite_name}', fingerprint "
                f"{first.suite_fingerprint}) and {other.path} (suite '{other.suite_name}', fingerprint "
                f"{other.suite_fingerprint}); compare runs of the same suite")


def pair_rows(base_rows: list[dict], tuned_rows: list[dict]) -> tuple[list[dict], list[dict], int, int]:
    """Rows of both runs on their common samples, in the base run's order, and the unmatched counts."""
    tuned_by = {r["sample_id"]: r for r in tuned_rows}
    base_ids = {r["sample_id"] for r in base_rows}
    common = [r for r in base_rows if r["sample_id"] in tuned_by]
    return common, [tuned_by[r["sample_id"]] for r in common], len(base_rows) - len(common), \
        sum(r["sample_id"] not in base_ids for r in tuned_rows)


def paired_bootstrap(task_type: str, base_rows: list[dict], tuned_rows: list[dict], seed: int,
                     n_boot: int = 1000, confidence: float = 0.95
                     ) -> tuple[dict[str, MetricDelta], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Deltas with paired intervals for every metric both runs have, and each metric's replicates
    (base, tuned). Rows must already be paired (same samples, same order)."""
    a, b = TaskArrays(task_type, base_rows), TaskArrays(task_type, tuned_rows)
    names = [m for m in a.names if m in b.names]
    point_a, point_b = a.point(), b.point()
    parts: dict[str, tuple[list, list]] = {m: ([], []) for m in names}
    for weights in bootstrap_weights(a.n, seed, n_boot):
        va, vb = a.values(weights), b.values(weights)
        for m in names:
            parts[m][0].append(va[m])
            parts[m][1].append(vb[m])
    deltas, reps = {}, {}
    for m in names:
        ra, rb = np.concatenate(parts[m][0]), np.concatenate(parts[m][1])
        diff = rb - ra
        _, lo, hi = interval(diff, confidence)
        deltas[m] = MetricDelta(m, point_a[m], point_b[m], point_b[m] - point_a[m], lo, hi, _p_value(diff),
                                higher_is_better(m))
        reps[m] = (ra, rb)
    return deltas, reps


def compare_task(task: str, base: Results, tuned: Results, seed: int, n_boot: int,
                 confidence: float) -> TaskComparison:
    entry = base.task(task)
    base_rows, tuned_rows, n_base_only, n_tuned_only = pair_rows(base.rows(task), tuned.rows(task))
    if not base_rows:
        raise InputError(f"task {task!r}: no sample of {base.path} matches one of {tuned.path} "
                         f"(samples pair by a hash of the prompt; were they run with the same data and template?)")
    deltas, reps = paired_bootstrap(entry["type"], base_rows, tuned_rows, task_seed(seed, task), n_boot, confidence)
    primary = entry.get("primary_metric") or next(iter(deltas))
    if primary not in deltas:
        raise InputError(f"task {task!r}: primary metric {primary!r} is missing from one of the runs",
                         file=str(tuned.path))
    labels = label_transitions(base_rows, tuned_rows) if get_task_type(entry["type"]).labelled else None
    return TaskComparison(task, entry["type"], entry["tag"], primary, len(base_rows), n_base_only, n_tuned_only,
                          deltas, reps[primary][0], reps[primary][1], labels)


def _summary(tasks: list[TaskComparison], confidence: float) -> Summary | None:
    rel_point, rel_reps = [], []
    for t in tasks:
        d = t.primary_delta
        if np.isfinite(d.relative):
            rel_point.append(d.relative)
            rel_reps.append(_retention(t.base_reps, t.tuned_reps, d.higher_is_better) - 1)
    if not rel_point:
        return None
    with np.errstate(invalid="ignore"):
        reps = np.nanmean(np.vstack(rel_reps), axis=0)
    _, lo, hi = interval(reps, confidence)
    return Summary(float(np.mean(rel_point)), lo, hi, len(rel_point))


def forgetting(tasks: list[TaskComparison], confidence: float = 0.95) -> Forgetting:
    """Per general task: the primary metric's delta and retention with intervals; the general-suite
    mean change set beside the mean gain on domain tasks."""
    general = [t for t in tasks if t.tag == "general"]
    rows = []
    for t in general:
        d = t.primary_delta
        ret = _retention(np.array([d.base]), np.array([d.tuned]), d.higher_is_better)[0]
        reps = _retention(t.base_reps, t.tuned_reps, d.higher_is_better)
        _, lo, hi = interval(reps, confidence)
        rows.append(Retention(t.task, d, float(ret), lo, hi))
    return Forgetting(rows, _summary(general, confidence), _summary([t for t in tasks if t.tag == "domain"], confidence))


def compare_results(base: Results, tuned: Results, seed: int = 1234, n_boot: int = 1000,
                    confidence: float = 0.95, correction: Correction = "none") -> Comparison:
    check_same_suite([base, tuned])
    common = [t for t in base.task_names if t in tuned.task_names]
    tasks = [compare_task(t, base, tuned, seed, n_boot, confidence) for t in common]
    comp = Comparison(base, tuned, seed, n_boot, confidence, tasks, forgetting(tasks, confidence),
                      [t for t in base.task_names if t not in common], [t for t in tuned.task_names if t not in common])
    comp.apply_correction(correction)
    return comp


# ---------------------------------------------------------------------------------------------- BWT

@dataclass
class TransferRow:
    task: str
    learned_in: str          # label of the run where the task first appears as a domain task
    then: float
    now: float
    metric: str
    higher_is_better: bool

    @property
    def transfer(self) -> float:
        """now - then, signed so that positive is better."""
        return (self.now - self.then) * (1 if self.higher_is_better else -1)


@dataclass
class BackwardTransfer:
    runs: list[str]
    rows: list[TransferRow]
    skipped: list[str]       # earlier domain tasks the last run did not evaluate

    @property
    def bwt(self) -> float | None:
        """Lopez-Paz & Ranzato (2017): mean over earlier tasks of R(last, i) - R(i, i), in the good direction."""
        return float(np.mean([r.transfer for r in self.rows])) if self.rows else None


def backward_transfer(runs: list[RunScores]) -> BackwardTransfer:
    """Runs oldest first (successive tunes). A domain task is 'learned' by the first run that scores
    it as a domain task; its transfer compares that score with the last run's."""
    learned: dict[str, tuple[str, float, str]] = {}
    last = runs[-1] if runs else None
    for run in runs[:-1]:
        for task, tag in run.tags.items():
            metric = run.primary.get(task)
            if tag == "domain" and task not in learned and metric and run.scores[task].get(metric) is not None:
                learned[task] = (run.label, run.scores[task][metric], metric)
    rows, skipped = [], []
    for task, (label, then, metric) in learned.items():
        now = last.scores.get(task, {}).get(metric) if last else None
        if now is None:
            skipped.append(task)
            continue
        rows.append(TransferRow(task, label, then, now, metric, last.higher_is_better.get(metric, higher_is_better(metric))))
    return BackwardTransfer([r.label for r in runs], rows, skipped)


# ---------------------------------------------------------------------------------------------- gate

class GateConfig(StrictModel):
    """Thresholds that make `dataforge compare` exit 1, so it can gate CI after every tune."""

    rules: list[GateRule] = Field(
        default_factory=list,
        description="Per-task rules (the suite YAML's `gate:` list); max_drop is judged in the metric's own "
                    "direction, so a perplexity rise is a drop.")
    max_regression: float | None = Field(
        None, ge=0, description="Fail when any task's primary metric gets worse by more than this fraction "
                                "(0.05 = 5 %), counting only significant changes unless require_significance is off.")
    max_forgetting: float | None = Field(
        None, ge=0, description="Fail when the general tasks' mean relative change is below -this (0.02 = 2 % forgotten).")
    min_domain_gain: float | None = Field(None, description="Fail when the domain tasks' mean relative change is below this.")
    min_bwt: float | None = Field(None, description="Fail when backward transfer over the series is below this.")
    require_significance: bool = Field(True, description="max_regression counts only changes whose paired CI excludes 0 "
                                                         "(under a correction: whose adjusted p-value is <= 1 - confidence).")
    correction: Correction = Field("none", description="Multiple-testing correction of the p-values of every task x "
                                   "metric delta, judged as one family: none, holm (family-wise error) or bh "
                                   "(Benjamini-Hochberg false discovery rate). Verdicts and max_regression use it.")


def gate_from_manifest(results: Results, overrides: dict | None = None) -> GateConfig:
    """The suite's gate as recorded in the manifest (`suite.gate`: a list of rules, or a mapping of
    GateConfig fields), with CLI flags on top."""
    recorded = results.manifest["suite"].get("gate") or {}
    data = {"rules": recorded} if isinstance(recorded, list) else dict(recorded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(GateConfig, data, f"{results.path / 'manifest.json'}: suite.gate")


def check_gate(comparison: Comparison, gate: GateConfig, bwt: BackwardTransfer | None = None) -> list[str]:
    """Every threshold the comparison breaks, as one line each; empty when the gate passes."""
    if comparison.correction != gate.correction:
        comparison.apply_correction(gate.correction)
    failures = []
    by_task = {t.task: t for t in comparison.tasks}
    for rule in gate.rules:
        task = by_task.get(rule.task)
        if task is None or rule.metric not in task.deltas:
            failures.append(f"gate rule {rule.task}/{rule.metric}: not present in both runs")
            continue
        d = task.deltas[rule.metric]
        drop = -d.delta if d.higher_is_better else d.delta
        if rule.max_drop is not None and drop > rule.max_drop:
            failures.append(f"{rule.task}/{rule.metric} got worse by {drop:.4g} (> max_drop {rule.max_drop:g}): "
                            f"{d.base:.4g} -> {d.tuned:.4g}")
        if rule.min is not None and d.tuned < rule.min:
            failures.append(f"{rule.task}/{rule.metric} = {d.tuned:.4g} is below min {rule.min:g}")
    if gate.max_regression is not None:
        for t in comparison.tasks:
            d = t.primary_delta
            counts = d.verdict == "regressed" if gate.require_significance else d.relative < 0
            if counts and -d.relative > gate.max_regression:
                adjusted = "" if d.p_adjusted is None else f", {gate.correction}-adjusted p {d.p_adjusted:.3g}"
                failures.append(f"{t.task}/{d.metric} regressed {-d.relative:.1%} (> max_regression "
                                f"{gate.max_regression:.1%}): {d.base:.4g} -> {d.tuned:.4g}, "
                                f"CI [{d.ci_low:+.4g}, {d.ci_high:+.4g}]{adjusted}")
    change = comparison.forgetting.general_change
    if gate.max_forgetting is not None and change is not None and -change.value > gate.max_forgetting:
        failures.append(f"general tasks: mean change {change.value:+.1%} forgets more than max_forgetting "
                        f"{gate.max_forgetting:.1%}")
    gain = comparison.forgetting.domain_gain
    if gate.min_domain_gain is not None and (gain is None or gain.value < gate.min_domain_gain):
        got = "no domain task" if gain is None else f"{gain.value:+.1%}"
        failures.append(f"domain tasks: mean change {got} is below min_domain_gain {gate.min_domain_gain:+.1%}")
    if gate.min_bwt is not None and bwt is not None and bwt.bwt is not None and bwt.bwt < gate.min_bwt:
        failures.append(f"backward transfer {bwt.bwt:+.4g} is below min_bwt {gate.min_bwt:+.4g}")
    return failures


def comparison_to_dict(comp: Comparison) -> dict:
    """A JSON-able view of a comparison (for `dataforge compare --json` and CI logs)."""
    def delta(d: MetricDelta) -> dict:
        return {"base": d.base, "tuned": d.tuned, "delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high,
                "p_value": d.p_value, "p_adjusted": d.p_adjusted, "higher_is_better": d.higher_is_better, "verdict": d.verdict,
                "relative": d.relative}

    def summary(s: Summary | None) -> dict | None:
        return None if s is None else {"value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_tasks": s.n_tasks}

    f = comp.forgetting
    return {
        "base": str(comp.base.path), "tuned": str(comp.tuned.path), "suite": comp.base.suite_name,
        "seed": comp.seed, "n_boot": comp.n_boot, "confidence": comp.confidence, "correction": comp.correction,
        "tasks": {t.task: {"type": t.type, "tag": t.tag, "primary_metric": t.primary, "n_paired": t.n_paired,
                           "n_base_only": t.n_base_only, "n_tuned_only": t.n_tuned_only,
                           "metrics": {m: delta(d) for m, d in t.deltas.items()}, "labels": t.labels}
                  for t in comp.tasks},
        "forgetting": {"general": {r.task: {"retention": r.retention, "ci_low": r.ci_low, "ci_high": r.ci_high,
                                            **delta(r.delta)} for r in f.general},
                       "general_change": summary(f.general_change), "domain_gain": summary(f.domain_gain)},
        "only_base": comp.only_base, "only_tuned": comp.only_tuned,
    }

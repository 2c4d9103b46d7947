"""The noise floor: how far a metric moves when nothing that matters changed.

Given the base results folder and re-runs of the same base (`dataforge eval --noise-seed N`, or
any other re-run: another batch size, backend or machine), each task x metric gets the spread of
its point values across those runs. A delta smaller than the spread is within run-to-run noise,
whatever its bootstrap CI says: the CI covers sampling of the eval *items*, the floor covers
everything else that moved between the runs.

Which noise a re-run measures depends on what it changed. `--noise-seed` changes the seed of
generation and of the bootstrap: generation decodes greedily (temperature 0), so on a deterministic
backend the point values do not move (a floor of 0 says so); on vLLM or a GPU, batch composition and
kernel non-determinism can flip greedy tokens, and that is what shows. The bootstrap seed moves only
the CI bounds, reported as their own spread. Loglikelihood tasks are deterministic on one machine.
Variance from *training* (another training seed or data order) is not measured here: a re-run must
be of the same model and adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataforge.errors import InputError
from dataforge.eval.compare import check_same_suite
from dataforge.eval.results import Results


@dataclass
class Spread:
    task: str
    metric: str
    values: list[float]          # point value in each run, the base first
    ci_lows: list[float]
    ci_highs: list[float]

    @property
    def spread(self) -> float:
        """max - min of the point values across runs."""
        return float(np.max(self.values) - np.min(self.values))

    @property
    def sd(self) -> float:
        if len(self.values) < 2:
            return float("nan")
        return 0.0 if self.spread == 0 else float(np.std(self.values, ddof=1))

    @property
    def ci_bound_spread(self) -> float:
        """How far the CI bounds move between runs (bootstrap Monte Carlo error, and any point shift)."""
        return float(max(np.ptp(self.ci_lows), np.ptp(self.ci_highs)))


def noise_floor(base: Results, reruns: list[Results]) -> dict[tuple[str, str], Spread]:
    """{(task, metric): Spread} over the base and its re-runs, for every task x metric all of them have."""
    if not reruns:
        raise InputError("a noise floor needs at least one re-run of the base")
    runs = [base, *reruns]
    check_same_suite(runs)
    for run in reruns:
        if run.manifest.get("model_fingerprint") != base.manifest.get("model_fingerprint"):
            raise InputError(f"is not a re-run of the base {base.path}: another model or adapter (model_fingerprint "
                             f"{run.manifest.get('model_fingerprint')} vs {base.manifest.get('model_fingerprint')})",
                             file=str(run.path / "manifest.json"), field="model_fingerprint")
    out = {}
    for task in base.task_names:
        if not all(task in r.metrics for r in reruns):
            continue
        for metric in base.task(task)["metrics"]:
            cells = [r.task(task)["metrics"].get(metric) for r in runs]
            if any(c is None for c in cells):
                continue
            out[task, metric] = Spread(task, metric, [c["value"] for c in cells], [c["ci_low"] for c in cells],
                                       [c["ci_high"] for c in cells])
    return out

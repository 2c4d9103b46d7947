"""`compare --select`: which checkpoint to ship, and whether the data can tell it from the next best.

Every candidate is scored on the same samples (those every run, the base included, has) with the
same bootstrap resamples, so the replicates of two candidates are paired and the interval of their
difference is that of a paired test, narrower and more honest than two overlapping CIs.

The score: with one task (`task=`, or a suite of one), the task's primary metric in its own units
and direction. With several, the mean relative change of the primary metrics against the base
(retention - 1, as the forgetting summary), so tasks in different units weigh alike. The best and
the runner-up are "distinguishable" when the paired interval of best - runner-up excludes 0;
otherwise the honest answer is "either", and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataforge.errors import InputError
from dataforge.eval.aggregate import TaskArrays, bootstrap_weights, higher_is_better, interval, task_seed
from dataforge.eval.compare import _p_value, _retention, check_same_suite
from dataforge.eval.results import Results


@dataclass
class Candidate:
    label: str
    path: str
    score: float
    ci_low: float
    ci_high: float
    reps: np.ndarray


@dataclass
class Selection:
    criterion: str                   # what the score is, in words
    higher_is_better: bool
    tasks: list[str]
    n_samples: dict[str, int]        # per task: samples every run has
    candidates: list[Candidate]      # best first
    diff: float                      # best - runner-up, in the good direction (>= 0)
    diff_low: float
    diff_high: float
    p_value: float

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    @property
    def runner_up(self) -> Candidate | None:
        return self.candidates[1] if len(self.candidates) > 1 else None

    @property
    def distinguishable(self) -> bool:
        return bool(self.diff_low > 0)

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "higher_is_better": self.higher_is_better, "tasks": self.tasks,
                "n_samples": self.n_samples, "best": self.best.label,
                "runner_up": self.runner_up.label if self.runner_up else None,
                "difference": {"value": self.diff, "ci_low": self.diff_low, "ci_high": self.diff_high,
                               "p_value": self.p_value}, "distinguishable": self.distinguishable,
                "candidates": [{"label": c.label, "path": c.path, "score": c.score, "ci_low": c.ci_low,
                                "ci_high": c.ci_high} for c in self.candidates]}


def _common_rows(runs: list[Results], task: str) -> list[list[dict]]:
    """Each run's rows of `task` on the samples every run has, in the first run's order."""
    ids = set.intersection(*({r["sample_id"] for r in run.rows(task)} for run in runs))
    if not ids:
        raise InputError(f"task {task!r}: no sample is common to every run (samples pair by a hash of the prompt)")
    out = []
    for run in runs:
        by_id = {r["sample_id"]: r for r in run.rows(task)}
        out.append([by_id[r["sample_id"]] for r in runs[0].rows(task) if r["sample_id"] in ids])
    return out


def _primary_reps(runs: list[Results], task: str, seed: int, n_boot: int) -> tuple[str, np.ndarray, np.ndarray, int]:
    """(metric, point values per run, (runs, n_boot) replicates from shared resamples, n samples)."""
    entry = runs[0].task(task)
    metric = entry["primary_metric"]
    arrays = [TaskArrays(entry["type"], rows) for rows in _common_rows(runs, task)]
    points = np.array([a.point()[metric] for a in arrays])
    parts: list[list[np.ndarray]] = [[] for _ in runs]
    for weights in bootstrap_weights(arrays[0].n, task_seed(seed, task), n_boot):
        for i, a in enumerate(arrays):
            parts[i].append(a.values(weights)[metric])
    return metric, points, np.vstack([np.concatenate(p) for p in parts]), arrays[0].n


def select_checkpoint(base: Results, candidates: list[Results], labels: list[str], task: str | None = None,
                      seed: int = 1234, n_boot: int = 1000, confidence: float = 0.95) -> Selection:
    """Rank `candidates` (results folders of the same suite) and test the best against the runner-up."""
    if len(candidates) < 2:
        raise InputError("--select needs at least two candidate results folders to choose from")
    runs = [base, *candidates]
    check_same_suite(runs)
    tasks = [t for t in base.task_names if all(t in r.metrics for r in candidates)]
    if task is not None:
        if task not in tasks:
            raise InputError(f"--select-task {task!r} is not a task every run has; they share: {', '.join(tasks)}")
        tasks = [task]
    if not tasks:
        raise InputError("the runs share no task to select on")
    n_samples, scores, reps, metric = {}, [], [], ""
    for t in tasks:
        metric, points, r, n_samples[t] = _primary_reps(runs, t, seed, n_boot)
        hib = higher_is_better(metric)
        if len(tasks) == 1:
            scores.append(points[1:])
            reps.append(r[1:])
        else:       # relative change against the base, in the good direction
            scores.append(_retention(np.full(len(candidates), points[0]), points[1:], hib) - 1)
            reps.append(_retention(r[0][None, :], r[1:], hib) - 1)
    if len(tasks) == 1:
        hib, criterion = higher_is_better(metric), f"{tasks[0]} {metric}"
        score, rep = scores[0], reps[0]
    else:
        hib, criterion = True, f"mean relative change of the primary metrics over {len(tasks)} tasks vs the base"
        with np.errstate(invalid="ignore"):
            score, rep = np.nanmean(np.vstack(scores), axis=0), np.nanmean(np.stack(reps), axis=0)
    sign = 1.0 if hib else -1.0
    order = sorted(range(len(candidates)), key=lambda i: -sign * score[i])
    ranked = []
    for i in order:
        _, lo, hi = interval(rep[i], confidence)
        ranked.append(Candidate(labels[i], str(candidates[i].path), float(score[i]), lo, hi, rep[i]))
    diff_reps = sign * (rep[order[0]] - rep[order[1]])
    _, lo, hi = interval(diff_reps, confidence)
    return Selection(criterion, hib, tasks, n_samples, ranked, float(sign * (score[order[0]] - score[order[1]])),
                     lo, hi, _p_value(diff_reps))

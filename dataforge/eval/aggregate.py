"""Task metrics from per-sample rows, and seeded bootstrap intervals that re-aggregate the same way.

A task metric is the mean of its per-sample values, with two exceptions computed from sums:
task types that declare sums (perplexity: rows carry `ll`, `n_tokens`, `n_words`, `n_bytes`; see
`dataforge.eval.task_types`), and the corpus metrics BLEU
and chrF (rows carry `metric_stats`, sacrebleu's per-sample sufficient statistics), which are
re-scored exactly as sacrebleu scores a corpus. A bootstrap replicate is a vector of multinomial
counts over the rows, so every metric of every replicate is one matrix product away, and the
paired compare applies the *same* count vectors to two runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dataforge.errors import InputError
from dataforge.util.fingerprint import fingerprint

PERPLEXITY_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
PERPLEXITY_FIELDS = ("ll", "n_tokens", "n_words", "n_bytes")
CORPUS_METRICS = ("bleu", "chrf")
LOWER_IS_BETTER = frozenset(PERPLEXITY_METRICS) | {"loss", "ter"}
CHRF_CHAR_ORDER = 6

_MAX_CELLS = 2_000_000  # replicates x rows held at once


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, so 'regression' always means getting worse in its own direction."""
    return metric not in LOWER_IS_BETTER


def task_seed(seed: int, task: str) -> int:
    """A per-task seed, so a task's intervals do not depend on which other tasks ran or their order."""
    return int(fingerprint(seed, task), 16) & (2**63 - 1)


def _task_sums(task_type: str):
    """The task type's sum-based metrics (perplexity's), from the task-type registry."""
    from dataforge.eval.task_types import get_task_type

    try:
        return get_task_type(task_type).sums
    except ValueError as exc:
        raise InputError(str(exc), field="type") from None


def _number(value, i: int, row: dict, name: str) -> float:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return float(value)
    raise InputError(f"must be a number, got {value!r}", line=i + 1, field=f"{name} (sample {row.get('sample_id')})")


class TaskArrays:
    """One task's rows as arrays; `values(weights)` aggregates any number of weightings at once."""

    def __init__(self, task_type: str, rows: list[dict]):
        self.task_type, self.n = task_type, len(rows)
        names = list(rows[0].get("metrics", {})) if rows else []
        self.mean_names = names
        self.means = np.zeros((self.n, len(names)))
        for i, row in enumerate(rows):
            metrics = row.get("metrics")
            if not isinstance(metrics, dict) or set(metrics) != set(names):
                raise InputError(f"has metrics {sorted(metrics or {})}, but the first sample has {sorted(names)}",
                                 line=i + 1, field="metrics")
            self.means[i] = [_number(metrics[m], i, row, f"metrics.{m}") for m in names]
        self.corpus: dict[str, np.ndarray] = {}
        for name in CORPUS_METRICS:
            if rows and name in (rows[0].get("metric_stats") or {}):
                self.corpus[name] = self._stack(rows, name)
        self.sum_spec = _task_sums(task_type)
        self.sums = None
        if self.sum_spec is not None and rows:
            self.sums = np.array([[_number(r.get(f), i, r, f) for f in self.sum_spec.fields] for i, r in enumerate(rows)])

    @staticmethod
    def _stack(rows: list[dict], name: str) -> np.ndarray:
        try:
            arr = np.array([r["metric_stats"][name] for r in rows], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"every sample needs metric_stats.{name} of the same length, as the first one has",
                             field=f"metric_stats.{name}") from None
        if arr.ndim != 2:
            raise InputError("statistics must be lists of the same length", field=f"metric_stats.{name}")
        return arr

    @property
    def names(self) -> list[str]:
        out = [m for m in self.mean_names if m not in self.corpus]
        out += list(self.corpus)
        if self.sums is not None:
            out = [m for m in out if m not in self.sum_spec.metrics] + list(self.sum_spec.metrics)
        return out

    def values(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights: (replicates, n) counts. Returns {metric: (replicates,) values}."""
        total = weights.sum(axis=1)
        out: dict[str, np.ndarray] = {}
        if self.mean_names:
            means = (weights @ self.means) / total[:, None]
            out.update({m: means[:, j] for j, m in enumerate(self.mean_names)})
        for name, stats in self.corpus.items():
            summed = np.rint(weights @ stats).astype(np.int64)
            out[name] = np.array([_corpus_score(name, s) for s in summed])
        if self.sums is not None:
            out.update(self.sum_spec.compute(weights @ self.sums))
        return {m: out[m] for m in self.names}

    def point(self) -> dict[str, float]:
        if not self.n:
            return {}
        return {m: float(v[0]) for m, v in self.values(np.ones((1, self.n))).items()}


_SCORERS: dict[tuple[str, int], object] = {}


def _corpus_score(name: str, stats: np.ndarray) -> float:
    """Score summed statistics with sacrebleu's own formula (BLEU: exp smoothing, no effective order,
    as corpus_score; chrF: beta 2, its word order read off the statistics' width)."""
    from sacrebleu.metrics import BLEU, CHRF

    key = (name, len(stats))
    if key not in _SCORERS:
        if name == "bleu":
            _SCORERS[key] = BLEU()
        else:
            orders, rest = divmod(len(stats), 3)
            if rest or orders < CHRF_CHAR_ORDER:
                raise InputError(f"chrF statistics of length {len(stats)} do not fit char order {CHRF_CHAR_ORDER}",
                                 field="metric_stats.chrf")
            _SCORERS[key] = CHRF(char_order=CHRF_CHAR_ORDER, word_order=orders - CHRF_CHAR_ORDER)
    return float(_SCORERS[key]._compute_score_from_stats(stats.tolist()).score)


def aggregate(task_type: str, rows: list[dict]) -> dict[str, float]:
    """Task-level metrics of a list of scored rows (see the module docstring for the rules)."""
    return TaskArrays(task_type, rows).point()


def bootstrap_weights(n: int, seed: int, n_boot: int) -> Iterator[np.ndarray]:
    """Resamples of n rows with replacement, as (chunk, n) count matrices; the same seed always gives
    the same resamples, whatever the chunking."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _MAX_CELLS // max(n, 1)))
    p = np.full(n, 1.0 / n)
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        yield rng.multinomial(n, p, size=size).astype(np.float64)
        done += size


def replicates(arrays: TaskArrays, seed: int, n_boot: int) -> dict[str, np.ndarray]:
    """{metric: (n_boot,) bootstrap values}."""
    parts: dict[str, list[np.ndarray]] = {m: [] for m in arrays.names}
    for weights in bootstrap_weights(arrays.n, seed, n_boot):
        for m, v in arrays.values(weights).items():
            parts[m].append(v)
    return {m: np.concatenate(v) for m, v in parts.items()}


def interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(stderr, low, high): the replicates' standard deviation and percentile interval."""
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) or len(values) < 2:
        return (float("nan"),) * 3
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(values.std(ddof=1)), float(lo), float(hi)


def bootstrap_ci(task_type: str, rows: list[dict], seed: int, n_boot: int = 1000,
                 confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{metric: (stderr, ci_low, ci_high)} from `n_boot` seeded resamples of the rows."""
    if not rows:
        return {}
    reps = replicates(TaskArrays(task_type, rows), seed, n_boot)
    return {m: interval(v, confidence) for m, v in reps.items()}

"""Adjusted p-values for many tests at once (every task x metric a comparison or a gate judges).

With 20 independent tests at 5 %, one "significant" change is expected from noise alone. Holm
(1979) controls the family-wise error rate (the chance of *any* false alarm) and is uniformly more
powerful than Bonferroni; Benjamini-Hochberg (1995) controls the false discovery rate (the expected
share of false alarms among the flagged changes), the usual choice when many metrics are screened.
Both return adjusted p-values: a test is rejected at level alpha when its adjusted p is <= alpha,
which makes exactly the same decisions as the step-down / step-up procedures themselves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Correction = Literal["none", "holm", "bh"]


def adjust_p_values(p_values: list[float] | np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values in the input order; NaN entries (tests that could not run) stay NaN and do
    not count towards the number of tests."""
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        return out
    q = p[ok]
    m = len(q)
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if method == "holm":
        # step-down: p_(i) * (m - i + 1), made non-decreasing from the smallest up
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method == "bh":
        # step-up: p_(i) * m / i, made non-increasing from the largest down
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"correction must be none, holm or bh, got {method!r}")
    back = np.empty(m)
    back[order] = np.minimum(adj, 1.0)
    out[ok] = back
    return out

"""Samples that flipped between base and tune: right -> wrong (what the tune broke) and wrong -> right.

A delta of +1 point can hide 40 newly broken answers and 41 newly fixed ones; reading the broken
ones is how a regression gets explained. "Right" is a per-sample primary metric of 1 and "wrong" of
0, so flips exist for tasks whose primary metric is 0/1 per sample (accuracy, exact match); tasks
scored on a scale (ROUGE, perplexity) have no flips and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dataforge.eval.compare import pair_rows
from dataforge.eval.results import Results


@dataclass
class Flip:
    sample_id: str
    prompt: str
    base_output: str
    tuned_output: str
    reference: str


@dataclass
class TaskFlips:
    task: str
    metric: str
    n_paired: int
    broken: list[Flip] = field(default_factory=list)     # right in the base, wrong in the tune
    fixed: list[Flip] = field(default_factory=list)      # wrong in the base, right in the tune


def _text(row: dict) -> str:
    for key in ("query", "prompt", "context", "text"):
        if isinstance(row.get(key), str):
            return row[key]
        if isinstance(row.get(key), list):      # a chat prompt
            return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in row[key])
    return ""


def _output(row: dict) -> str:
    if "prediction" in row:
        return str(row["prediction"])
    choices, pred = row.get("choices"), row.get("pred")
    if isinstance(choices, list) and isinstance(pred, int) and 0 <= pred < len(choices):
        return str(choices[pred])
    return ""


def _reference(row: dict) -> str:
    if "reference" in row:
        ref = row["reference"]
        return " | ".join(map(str, ref)) if isinstance(ref, list) else str(ref)
    choices, gold = row.get("choices"), row.get("gold")
    if isinstance(choices, list) and isinstance(gold, int) and 0 <= gold < len(choices):
        return str(choices[gold])
    return ""


def task_flips(task: str, base: Results, tuned: Results) -> TaskFlips | None:
    """The flips of one task on its paired samples, in the base run's order; None when the task's
    primary metric is not 0/1 per sample."""
    metric = base.task(task)["primary_metric"]
    rows_a, rows_b, _, _ = pair_rows(base.rows(task), tuned.rows(task))
    values = [(a.get("metrics", {}).get(metric), b.get("metrics", {}).get(metric)) for a, b in zip(rows_a, rows_b, strict=True)]
    if not rows_a or any(v not in (0, 1) for pair in values for v in pair):
        return None
    out = TaskFlips(task, metric, len(rows_a))
    for (va, vb), a, b in zip(values, rows_a, rows_b, strict=True):
        if va != vb:
            flip = Flip(a["sample_id"], _text(a), _output(a), _output(b), _reference(a))
            (out.broken if va == 1 else out.fixed).append(flip)
    return out


def flips(base: Results, tuned: Results) -> list[TaskFlips]:
    """Flips of every task both runs have whose primary metric is 0/1 per sample."""
    found = (task_flips(t, base, tuned) for t in base.task_names if t in tuned.metrics)
    return [f for f in found if f is not None]

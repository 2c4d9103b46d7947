"""What `dataforge compare` prints beside the deltas: checkpoint selection, the noise floor, the
contamination split and flipped samples. Kept apart from `compare.py`'s main table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataforge.cli.compare import _ci, _fmt
from dataforge.errors import InputError


def candidate_folders(paths: list[Path]) -> list[Path]:
    """Results folders to select from: each path is one, or holds one per adapter (`dataforge eval
    --adapter 'run/checkpoints/*' -o OUT` writes OUT/<checkpoint>/), taken in natural order."""
    from dataforge.eval.checkpoints import natural_key

    out: list[Path] = []
    for path in paths:
        if (path / "manifest.json").is_file():
            out.append(path)
            continue
        inner = sorted((p for p in path.iterdir() if (p / "manifest.json").is_file()), key=lambda p: natural_key(p.name)) \
            if path.is_dir() else []
        if not inner:
            raise InputError("is neither a results folder nor a folder of results folders (no manifest.json)",
                             file=str(path))
        out.extend(inner)
    return out


def print_selection(console: Console, sel, confidence: float) -> None:
    table = Table(title=escape(f"checkpoint selection: {sel.criterion} ({'higher' if sel.higher_is_better else 'lower'} "
                               "is better)"))
    for col in ("rank", "candidate", "score", f"{confidence:.0%} CI"):
        table.add_column(col, justify="right" if col != "candidate" else "left", overflow="fold")
    for i, c in enumerate(sel.candidates, start=1):
        table.add_row(str(i), escape(c.label), _fmt(c.score), _ci(c.ci_low, c.ci_high))
    console.print(table)
    second = sel.runner_up
    verdict = "distinguishable" if sel.distinguishable else "NOT distinguishable (either is as good on this data)"
    console.print(f"best: [bold]{escape(sel.best.label)}[/]; vs runner-up {escape(second.label)}: "
                  f"{_fmt(sel.diff, True)} {_ci(sel.diff_low, sel.diff_high, True)} (paired bootstrap, p "
                  f"{_fmt(sel.p_value)}): {verdict}")


def print_noise(console: Console, comp, spreads: dict, n_runs: int) -> None:
    """The noise floor beside each delta: a delta within the spread of re-runs is not a change."""
    table = Table(title=f"noise floor: spread of the base over {n_runs} runs (base + re-runs)")
    for col in ("task", "metric", "Δ", "spread (max-min)", "sd", "CI-bound spread", "Δ beyond noise"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right", overflow="fold")
    for t in comp.tasks:
        for d in t.deltas.values():
            s = spreads.get((t.task, d.metric))
            if s is None:
                continue
            beyond = "yes" if abs(d.delta) > s.spread else "[yellow]no[/]"
            table.add_row(t.task, d.metric, _fmt(d.delta, True), _fmt(s.spread), _fmt(s.sd), _fmt(s.ci_bound_spread),
                          beyond)
    console.print(table)


def print_contamination(console: Console, label: str, rows, source: str) -> None:
    table = Table(title=escape(f"{label}: scores on clean and overlapping items ({source})"))
    for col in ("task", "metric", "clean (n)", "overlap (n)", "overlap - clean [CI]", "flag"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right", overflow="fold")
    for r in rows:
        table.add_row(r.task, r.metric, f"{_fmt(r.clean)} ({r.n_clean})", f"{_fmt(r.overlap)} ({r.n_overlap})",
                      f"{_fmt(r.diff, True)} {_ci(*r.diff_ci, True)}", "[red]differs[/]" if r.flagged else "")
    console.print(table)


def print_flips(console: Console, task_flips: list, shown: int = 5) -> None:
    for f in task_flips:
        console.print(f"flips {escape(f.task)} ({f.metric}, {f.n_paired} paired): {len(f.broken)} right→wrong, "
                      f"{len(f.fixed)} wrong→right")
        for flip in f.broken[:shown]:
            console.print(f"  [red]broken[/] {escape(flip.prompt[-80:])!r}: {escape(flip.base_output[:40])!r} → "
                          f"{escape(flip.tuned_output[:40])!r}")

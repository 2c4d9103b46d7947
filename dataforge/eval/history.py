"""The local history of every eval: one SQLite file, one row per (run, task, metric).

A tune's scores over time, and backward transfer across successive tunes, need every past run in
one place, queried by label or series. SQLite is in the standard library and one file, which is
all this needs; the store lives at `$DATAFORGE_HOME/history.sqlite` (default
`~/.cache/dataforge/history.sqlite`) unless a path is given. Recording the same results folder
twice updates its rows; it never duplicates them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dataforge.errors import InputError
from dataforge.eval.results import Results, load_results

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    series TEXT,
    created_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    results_dir TEXT NOT NULL,
    model TEXT NOT NULL,
    adapter TEXT,
    model_fingerprint TEXT,
    suite TEXT NOT NULL,
    suite_fingerprint TEXT NOT NULL,
    manifest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    tag TEXT NOT NULL,
    type TEXT NOT NULL,
    metric TEXT NOT NULL,
    is_primary INTEGER NOT NULL,
    value REAL,
    stderr REAL,
    ci_low REAL,
    ci_high REAL,
    n INTEGER NOT NULL,
    higher_is_better INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, metric)
);
CREATE INDEX IF NOT EXISTS runs_by_label ON runs(label, created_at);
CREATE INDEX IF NOT EXISTS runs_by_series ON runs(series, created_at);
"""


def default_history_path() -> Path:
    home = os.environ.get("DATAFORGE_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "dataforge"
    return base / "history.sqlite"


@contextmanager
def connect(db: str | Path | None = None, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    """An open store; a missing store is created only when `create` (reading never makes one)."""
    path = Path(db) if db is not None else default_history_path()
    if not path.exists() and not create:
        raise InputError("no history store here yet (record a run first)", file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise InputError(f"history store has schema version {version}, this dataforge reads {SCHEMA_VERSION}",
                             file=str(path))
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a usable history store: {exc}", file=str(path)) from None
    finally:
        conn.close()


def record_run(results: Results | str | Path, db: str | Path | None = None, *, label: str | None = None,
               series: str | None = None) -> str:
    """Append (or refresh) one results folder in the store; returns its run id."""
    res = results if isinstance(results, Results) else load_results(results)
    m = res.manifest
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with connect(db) as conn, conn:
        conn.execute("DELETE FROM scores WHERE run_id = ?", (res.run_id,))
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (res.run_id, label or res.label, series, m.get("created_at") or now, now, str(res.path.resolve()),
             str(m["model"]), m.get("adapter"), m.get("model_fingerprint"), res.suite_name, res.suite_fingerprint,
             json.dumps(m, ensure_ascii=False, default=str)),
        )
        for task, entry in res.metrics.items():
            primary = entry.get("primary_metric")
            conn.executemany(
                "INSERT INTO scores VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(res.run_id, task, entry["tag"], entry["type"], metric, int(metric == primary), v.get("value"),
                  v.get("stderr"), v.get("ci_low"), v.get("ci_high"), entry["n"], int(v.get("higher_is_better", True)))
                 for metric, v in entry["metrics"].items()],
            )
    return res.run_id


@dataclass
class RunScores:
    """One recorded run and its scores: {task: {metric: value}}, with each task's tag and primary metric."""

    run_id: str
    label: str
    series: str | None
    created_at: str
    results_dir: str
    model: str
    adapter: str | None
    suite: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)


def list_runs(db: str | Path | None = None, *, label: str | None = None, series: str | None = None,
              suite: str | None = None) -> list[RunScores]:
    """Recorded runs, oldest first (by the eval's own timestamp), with their scores."""
    where, args = [], []
    for column, value in (("label", label), ("series", series), ("suite", suite)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = ("SELECT run_id, label, series, created_at, results_dir, model, adapter, suite FROM runs"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_at, recorded_at")
    with connect(db, create=False) as conn:
        runs = {row[0]: RunScores(*row) for row in conn.execute(sql, args)}
        if runs:
            marks = ",".join("?" * len(runs))
            for run_id, task, tag, metric, is_primary, value, hib in conn.execute(
                    f"SELECT run_id, task, tag, metric, is_primary, value, higher_is_better FROM scores "
                    f"WHERE run_id IN ({marks}) ORDER BY task, metric", list(runs)):
                run = runs[run_id]
                run.scores.setdefault(task, {})[metric] = value
                run.tags[task] = tag
                run.higher_is_better[metric] = bool(hib)
                if is_primary:
                    run.primary[task] = metric
    return list(runs.values())


def run_scores(results: Results, label: str | None = None, series: str | None = None) -> RunScores:
    """A results folder in the same shape as a recorded run (for a run not yet in the store)."""
    m = results.manifest
    run = RunScores(results.run_id, label or results.label, series, str(m.get("created_at", "")), str(results.path),
                    str(m["model"]), m.get("adapter"), results.suite_name)
    for task, entry in results.metrics.items():
        run.scores[task] = {k: v["value"] for k, v in entry["metrics"].items()}
        run.tags[task] = entry["tag"]
        run.primary[task] = entry.get("primary_metric")
        run.higher_is_better.update({k: bool(v.get("higher_is_better", True)) for k, v in entry["metrics"].items()})
    return run


def series_of(run_id: str, db: str | Path | None = None) -> str | None:
    """The series a recorded run belongs to, or None (also when there is no store yet)."""
    path = Path(db) if db is not None else default_history_path()
    if not path.exists():
        return None
    with connect(path, create=False) as conn:
        row = conn.execute("SELECT series FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return row[0] if row else None

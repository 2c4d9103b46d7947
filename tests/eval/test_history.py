"""The SQLite history store: recording, idempotence, filters, backward transfer, and bad stores."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from dataforge.errors import InputError
from dataforge.eval.compare import backward_transfer
from dataforge.eval.history import list_runs, record_run, run_scores, series_of
from dataforge.eval.results import TaskResult, load_results, write_results


def _results(path, label, created, domain_acc, general_acc, extra_domain=None):
    """A results folder with one domain and one general multiple-choice task (accuracy per sample)."""
    def rows(acc, n=20):
        return [{"prompt": f"q{i}", "metrics": {"acc": float(i < acc * n)}} for i in range(n)]

    tasks = {"domain_a": TaskResult("multiple_choice", "domain", rows(domain_acc)),
             "general": TaskResult("multiple_choice", "general", rows(general_acc))}
    if extra_domain is not None:
        tasks["domain_b"] = TaskResult("multiple_choice", "domain", rows(extra_domain))
    manifest = {"model": "tiny", "adapter": f"runs/{label}", "label": label, "created_at": created,
                "suite": {"name": "s", "fingerprint": "f"}}
    return load_results(write_results(path, manifest, tasks, seed=0, n_boot=200))


def test_recorded_runs_come_back_in_time_order_with_their_scores(tmp_path):
    db = tmp_path / "h.sqlite"
    second = _results(tmp_path / "r2", "tune2", "2025-02-01T00:00:00+00:00", 0.6, 0.5)
    first = _results(tmp_path / "r1", "tune1", "2025-01-01T00:00:00+00:00", 0.8, 0.7)
    record_run(second, db, series="bot")
    record_run(first, db, series="bot")
    runs = list_runs(db)
    assert [r.label for r in runs] == ["tune1", "tune2"]
    assert runs[0].scores["domain_a"]["acc"] == pytest.approx(0.8)
    assert runs[1].scores["general"]["acc"] == pytest.approx(0.5)
    assert runs[0].primary == {"domain_a": "acc", "general": "acc"}
    assert runs[0].tags == {"domain_a": "domain", "general": "general"}
    assert series_of(first.run_id, db) == "bot"


def test_recording_the_same_folder_twice_updates_instead_of_duplicating(tmp_path):
    db = tmp_path / "h.sqlite"
    res = _results(tmp_path / "r", "tune", "2025-01-01T00:00:00+00:00", 0.5, 0.5)
    record_run(res, db, label="first name")
    record_run(res, db, label="second name")
    runs = list_runs(db)
    assert len(runs) == 1 and runs[0].label == "second name"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 2


def test_filters_by_label_and_series(tmp_path):
    db = tmp_path / "h.sqlite"
    record_run(_results(tmp_path / "a", "a", "2025-01-01T00:00:00+00:00", 0.5, 0.5), db, series="x")
    record_run(_results(tmp_path / "b", "b", "2025-01-02T00:00:00+00:00", 0.5, 0.5), db, series="y")
    assert [r.label for r in list_runs(db, series="y")] == ["b"]
    assert [r.label for r in list_runs(db, label="a")] == ["a"]
    assert list_runs(db, label="nobody") == []


def test_backward_transfer_over_successive_tunes(tmp_path):
    t1 = run_scores(_results(tmp_path / "1", "t1", "2025-01-01T00:00:00+00:00", 0.80, 0.70))
    t2 = run_scores(_results(tmp_path / "2", "t2", "2025-01-02T00:00:00+00:00", 0.70, 0.70, extra_domain=0.90))
    t3 = run_scores(_results(tmp_path / "3", "t3", "2025-01-03T00:00:00+00:00", 0.60, 0.65, extra_domain=0.85))
    bwt = backward_transfer([t1, t2, t3])
    got = {r.task: (r.learned_in, r.then, r.now) for r in bwt.rows}
    assert got == {"domain_a": ("t1", pytest.approx(0.80), pytest.approx(0.60)),
                   "domain_b": ("t2", pytest.approx(0.90), pytest.approx(0.85))}
    assert bwt.bwt == pytest.approx(((0.60 - 0.80) + (0.85 - 0.90)) / 2)
    assert backward_transfer([t1]).bwt is None


def test_reading_a_missing_or_broken_store_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no history store"):
        list_runs(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a usable history store"):
        list_runs(bad)


def test_history_command_records_and_shows_runs(tmp_path):
    db = tmp_path / "h.sqlite"
    res = _results(tmp_path / "r", "tune-x", "2025-01-01T00:00:00+00:00", 0.75, 0.5)
    run = subprocess.run([sys.executable, "-m", "dataforge", "history", "--add", str(res.path), "--series", "s1",
                          "--db", str(db)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "tune-x" in run.stdout and "2025-01-01T00:00" in run.stdout   # a column per run: label, date
    assert re.search(r"│ acc\s*│\s*0\.75 │", run.stdout) and re.search(r"│ acc\s*│\s*0\.5 │", run.stdout)
    bad = subprocess.run([sys.executable, "-m", "dataforge", "history", "--add", str(tmp_path), "--db", str(db)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not an eval results folder" in bad.stderr and "Traceback" not in bad.stderr


def test_a_long_history_is_shown_one_row_per_run_in_time_order(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(8):
        res = _results(tmp_path / f"r{i}", f"tune-{i}", f"2025-01-0{i + 1}T00:00:00+00:00", 0.05 * (i + 1), 0.5)
        record_run(res.path, db)
    run = subprocess.run([sys.executable, "-m", "dataforge", "history", "--db", str(db)], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "100"})
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if re.match(r"│ 2025-01-0\d", line)]
    assert [re.search(r"tune-(\d)", r).group(1) for r in rows] == [str(i) for i in range(8)]
    recorded = [r.scores["domain_a"]["acc"] for r in list_runs(db)]
    assert all(re.search(rf"│\s*{recorded[i]:.4g} │", r) for i, r in enumerate(rows))

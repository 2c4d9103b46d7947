"""`compare --select`: the best checkpoint, its interval, and whether it beats the runner-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataforge.errors import InputError
from dataforge.eval.results import TaskResult, load_results, write_results
from dataforge.eval.selection import select_checkpoint

SUITE = {"name": "s", "fingerprint": "f"}


def _write(path, **tasks):
    rows = {name: TaskResult("multiple_choice", "domain",
                             [{"prompt": f"{name} question {i}", "metrics": {"acc": float(v)}} for i, v in enumerate(vals)])
            for name, vals in tasks.items()}
    return load_results(write_results(path, {"model": "tiny", "adapter": path.name, "suite": SUITE}, rows, seed=1,
                                      n_boot=100))


def _checkpoints(tmp_path, n=300):
    """A base and three checkpoints that get a shared set of items right, each with its own extra
    successes: step 300 clearly beats step 100, step 200 is close behind step 300."""
    rng = np.random.default_rng(0)
    easy = rng.uniform(size=n) < 0.4
    noise = rng.uniform(size=(4, n))
    acc = {"base": easy | (noise[0] < 0.05), "step-100": easy | (noise[1] < 0.10),
           "step-200": easy | (noise[2] < 0.25), "step-300": easy | (noise[3] < 0.27)}
    folders = {k: _write(tmp_path / "ckpts" / k if k != "base" else tmp_path / k, t=v) for k, v in acc.items()}
    return folders, acc


def test_the_best_checkpoint_is_named_with_a_paired_interval_against_the_runner_up(tmp_path):
    runs, acc = _checkpoints(tmp_path)
    cands = [runs["step-100"], runs["step-200"], runs["step-300"]]
    sel = select_checkpoint(runs["base"], cands, ["step-100", "step-200", "step-300"], seed=3, n_boot=4000)
    means = {k: v.mean() for k, v in acc.items()}
    assert [c.label for c in sel.candidates] == sorted(["step-100", "step-200", "step-300"], key=lambda k: -means[k])
    assert sel.best.score == pytest.approx(means[sel.best.label])
    assert sel.best.ci_low < sel.best.score < sel.best.ci_high
    # best vs runner-up: the interval of a paired difference, checked against the normal approximation
    diff = acc[sel.best.label].astype(float) - acc[sel.runner_up.label].astype(float)
    assert sel.diff == pytest.approx(diff.mean())
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert (sel.diff_high - sel.diff_low) == pytest.approx(2 * half, rel=0.15)
    assert sel.distinguishable == (diff.mean() - half > 0)
    # a clear winner over a far weaker runner-up is distinguishable
    clear = select_checkpoint(runs["base"], [runs["step-100"], runs["step-300"]], ["step-100", "step-300"], n_boot=2000)
    assert clear.best.label == "step-300" and clear.distinguishable and clear.p_value < 0.01


def test_select_on_the_command_line_reads_a_folder_of_checkpoint_results(tmp_path):
    runs, acc = _checkpoints(tmp_path)
    best = max(("step-100", "step-200", "step-300"), key=lambda k: acc[k].mean())
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-m", "dataforge", "compare", str(tmp_path / "base"), str(tmp_path / "ckpts"),
                          "--select", "--n-boot", "500", "--json", str(tmp_path / "sel.json")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert f"best: {best};" in run.stdout and "distinguishable" in run.stdout
    saved = json.loads((tmp_path / "sel.json").read_text())["selection"]
    assert saved["best"] == best and [c["label"] for c in saved["candidates"]][0] == best
    one = subprocess.run([sys.executable, "-m", "dataforge", "compare", str(tmp_path / "base"), str(tmp_path / "ckpts"),
                          str(tmp_path / "base")], capture_output=True, text=True, env=env)
    assert one.returncode == 2 and "add --select" in one.stderr


def test_selection_needs_two_candidates_and_a_task_they_share(tmp_path):
    runs, _ = _checkpoints(tmp_path, n=20)
    with pytest.raises(InputError, match="at least two"):
        select_checkpoint(runs["base"], [runs["step-100"]], ["a"])
    with pytest.raises(InputError, match="'nope' is not a task every run has"):
        select_checkpoint(runs["base"], [runs["step-100"], runs["step-200"]], ["a", "b"], task="nope")

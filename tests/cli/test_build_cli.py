"""The `dataforge build` command as a user runs it: quick mode, YAML errors, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataforge.paths import pipelines_dir

CLI = [sys.executable, "-m", "dataforge"]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a.jsonl"
    rows = [{"instruction": f"Describe item number {i} of the inventory list.", "input": "",
             "output": f"Item {i} is a {['red', 'blue', 'green'][i % 3]} widget stored on shelf {i % 7}."} for i in range(40)]
    a.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = tmp_path / "b.csv"
    with open(b, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        for i in range(30):
            w.writerow([f"Translate phrase {i} into plain words.", f"phrase-{i}", f"Phrase {i} means step {i * 3} of the guide."])
    return a, b


def test_quick_mode_builds_named_sources_from_flags(tmp_path):
    a, b = _write_inputs(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("build", "--input", f"domain={a}", "--input", str(b), "--template", "alpaca", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"domain", "b"}
    assert manifest["sources"]["domain"]["read"] == 40 and manifest["sources"]["b"]["read"] == 30
    assert manifest["config"]["template"]["name"] == "alpaca"


def test_bad_config_reports_field_paths_with_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("inputs: [{path: x.jsonl}]\ndedupe:\n  near:\n    threshold: 1.5\n    shingles: 3\nsplit:\n  train: lots\n")
    proc = run_cli("build", str(cfg))
    assert proc.returncode == 2
    assert "dedupe.near.threshold: must be between 0 and 1" in proc.stderr
    assert "dedupe.near.shingles: unknown key" in proc.stderr
    assert "split.train" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_input_file_is_a_clear_error(tmp_path):
    proc = run_cli("build", "--input", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_on_error_fail_stops_at_the_first_bad_record(tmp_path):
    a, _ = _write_inputs(tmp_path)
    lines = a.read_text().splitlines()
    lines[6] = lines[6][:25]  # truncate line 7
    a.write_text("\n".join(lines) + "\n")
    proc = run_cli("build", "--input", str(a), "-o", str(tmp_path / "o"), "--on-error", "fail", "-q")
    assert proc.returncode == 2
    assert f"{a}:7" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = run_cli("build", "--input", str(a), "-o", str(tmp_path / "o2"), "-q")
    assert ok.returncode == 0, ok.stderr
    rejects = [json.loads(x) for x in (tmp_path / "o2" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["origin_line"]) for r in rejects if r["stage"] == "collect"] == [("parse_error", 7)]


def test_help_documents_every_config_key():
    proc = run_cli("build", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for key in ("dedupe.near.threshold", "decontaminate.ngram", "split.stratify_by_source", "mix.proportions",
                "tokenize.pad_to_multiple_of", "tokenize.overlength", "clean.output.max_chars"):
        assert key in text


@pytest.mark.slow
def test_killed_build_leaves_nothing_a_rerun_would_trust(tmp_path):
    """kill -9 the demo build at several moments; a re-run must give the same dataset as a clean run."""
    pipeline = pipelines_dir() / "build_alpaca.yaml"
    clean_out = tmp_path / "clean"
    ok = run_cli("build", str(pipeline), "-o", str(clean_out), "-q")
    assert ok.returncode == 0, ok.stderr
    expected = json.loads((clean_out / "manifest.json").read_text())["fingerprint"]
    for delay in (1.5, 3.0, 4.5):
        out = tmp_path / f"killed-{delay}"
        proc = subprocess.Popen([*CLI, "build", str(pipeline), "-o", str(out), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "manifest.json").exists():  # finished before the kill: must be complete and right
            assert json.loads((out / "manifest.json").read_text())["fingerprint"] == expected
        rerun = run_cli("build", str(pipeline), "-o", str(out), "-q")
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads((out / "manifest.json").read_text())["fingerprint"] == expected


def _unprivileged() -> list[str]:
    """A prefix that makes permission bits bind: root reads and writes through chmod 000 unless it
    drops CAP_DAC_OVERRIDE (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _records_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Spell the number {i}.", "output": f"{i} is spelled out."}) + "\n"
                            for i in range(6)))
    return path


def test_unreadable_input_exits_2_naming_the_file(tmp_path):
    path = _records_file(tmp_path)
    path.chmod(0)
    proc = subprocess.run([*_unprivileged(), *CLI, "build", "-i", str(path), "-t", "alpaca", "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: Permission denied" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["under_a_file", "read_only_folder"])
def test_unwritable_output_exits_2_naming_the_folder(tmp_path, where):
    path = _records_file(tmp_path)
    prefix: list[str] = []
    if where == "under_a_file":
        out = tmp_path / "a.jsonl" / "run"
        reason = "Not a directory (a part of this path is a file, not a folder)"
    else:
        prefix = _unprivileged()
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "run"
        reason = "Permission denied"
    proc = subprocess.run([*prefix, *CLI, "build", "-i", str(path), "-t", "alpaca", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{out}: {reason}" in proc.stderr and "Traceback" not in proc.stderr


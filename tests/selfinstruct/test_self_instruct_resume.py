"""A run killed at any moment continues without repeating accepted tasks or losing paid-for generations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from si_helpers import read_jsonl, small_config

from dataforge.selfinstruct.run import run_self_instruct

OUTPUTS = ("tasks.alpaca.jsonl", "pool.jsonl", "rejects.jsonl")


def _config(out, **over):
    return small_config(out, **{"batch_size": 1, "max_prompts": 6, "num_tasks": 50, **over})


def _write_yaml(cfg, path):
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _comparable_manifest(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {k: manifest[k] for k in ("status", "num_prompts", "batches", "accounting", "pool_size")}


def test_killed_run_resumes_to_the_same_result_without_regenerating(tmp_path):
    reference = tmp_path / "reference"
    run_self_instruct(_config(reference))
    total_calls = len(read_jsonl(reference / "generations.jsonl"))

    killed = tmp_path / "killed"
    config_path = _write_yaml(_config(killed), tmp_path / "si.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "dataforge", "self-instruct", str(config_path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    journal = killed / "generations.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (journal.exists() and journal.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never recorded a generation"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    paid_for = journal.read_bytes()
    paid_for = paid_for[: paid_for.rfind(b"\n") + 1]
    recorded = paid_for.count(b"\n")
    assert 1 <= recorded < total_calls, "the kill must land before the run finished"

    run_self_instruct(_config(killed))

    assert journal.read_bytes().startswith(paid_for)  # nothing paid for was lost or redone
    keys = [e["key"] for e in read_jsonl(journal)]
    assert len(keys) == len(set(keys)) == total_calls
    for name in OUTPUTS:
        assert (killed / name).read_text() == (reference / name).read_text(), name
    assert _comparable_manifest(killed) == _comparable_manifest(reference)


def test_half_written_journal_line_is_cut_and_the_run_goes_on(tmp_path):
    reference = tmp_path / "reference"
    run_self_instruct(_config(reference))
    out = tmp_path / "torn"
    run_self_instruct(_config(out, max_prompts=2))
    journal = out / "generations.jsonl"
    whole = journal.read_text()
    journal.write_text(whole + '{"key": "b00002/instructions", "prompts_sha256": "ab')  # killed mid-append
    run_self_instruct(_config(out))
    assert journal.read_text().startswith(whole)
    assert [e["key"] for e in read_jsonl(journal)] == [e["key"] for e in read_jsonl(reference / "generations.jsonl")]
    for name in OUTPUTS:
        assert (out / name).read_text() == (reference / name).read_text(), name


def test_resume_of_a_finished_run_loads_no_model_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    run_self_instruct(_config(out, max_prompts=2))
    before = {name: (out / name).read_text() for name in (*OUTPUTS, "generations.jsonl")}
    # An endpoint that refuses every connection proves the replay never calls a backend.
    cfg = _config(out, max_prompts=2, backend={"name": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    run_self_instruct(cfg)
    assert {name: (out / name).read_text() for name in before} == before

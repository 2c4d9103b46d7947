"""Atomic writes, and the removal of what a killed writer left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.util.atomic import atomic_path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_temp_folders_are_removed_by_the_next_run(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Give fact {i}.", "input": "", "output": f"Fact {i} holds."}) + "\n"
                            for i in range(20)))
    run = tmp_path / "run"
    cfg = BuildConfig(inputs=[{"path": str(data), "source": "s"}], output=str(run), tokenize={"enabled": False})
    run_build(cfg, show_progress=False)
    with atomic_path(run / "probe.txt") as tmp:  # the names a writer makes carry its process id
        assert tmp.parent.name.startswith(f".probe.txt.{os.getpid()}-") and tmp.parent.name.endswith(".tmp")
        tmp.write_text("done")

    gone = dead_pid()
    stale = [run / f".tokenized.{gone}-abcd1234.tmp", run / "splits" / f".train.parquet.{gone}-x_y9z0w1.tmp",
             run / ".cache" / f".clean-0123.{gone}-qqqqqqqq.tmp", run / f".tokenized.old-{gone}"]
    live = [run / f".tokenized.{os.getppid()}-abcd1234.tmp",   # a live process's work in progress
            run / ".notes.tmp", run / "my.tmp", run / f".backup.old-{gone}x"]  # not names atomic_path makes
    for p in stale + live:
        p.mkdir(parents=True)
        (p / "data.arrow").write_bytes(b"partial")
    outside = tmp_path / f".elsewhere.{gone}-abcd1234.tmp"
    outside.mkdir()
    (run / "link").symlink_to(tmp_path, target_is_directory=True)

    run_build(cfg, show_progress=False)
    assert not any(p.exists() for p in stale)
    assert all((p / "data.arrow").read_bytes() == b"partial" for p in live)
    assert outside.is_dir()

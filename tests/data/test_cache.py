"""The stage cache never reaches outside the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.errors import StateError


def small_build(tmp_path: Path, run: Path) -> BuildConfig:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Give fact {i}.", "input": "", "output": f"Fact {i} holds."}) + "\n"
                            for i in range(20)))
    return BuildConfig(inputs=[{"path": str(data), "source": "s"}], output=str(run), tokenize={"enabled": False})


def test_a_symlinked_cache_is_refused_and_its_target_left_alone(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "unrelated").mkdir(parents=True)
    (elsewhere / "unrelated" / "keep.txt").write_text("not the build's")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".cache").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StateError, match=r"\.cache is a symbolic link .*remove the link"):
        run_build(small_build(tmp_path, run), show_progress=False)
    assert (elsewhere / "unrelated" / "keep.txt").read_text() == "not the build's"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["unrelated"]

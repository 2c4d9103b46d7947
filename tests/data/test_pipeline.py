"""End-to-end build on the bundled demo data: accounting, outputs, caching, refusal to clobber."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest

from dataforge.config.base import load_config
from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.errors import StateError
from dataforge.paths import pipelines_dir

PIPELINE = pipelines_dir() / "build_alpaca.yaml"


def _demo_config(out: Path, **overrides) -> BuildConfig:
    cfg = load_config(BuildConfig, PIPELINE, {"output": str(out), **overrides})
    return cfg


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "run"
    result = run_build(_demo_config(out), base_dir=PIPELINE.parent, show_progress=False)
    return result


def test_every_record_is_kept_or_rejected_per_source(demo_run):
    manifest = demo_run.manifest
    rejects = [json.loads(line) for line in (demo_run.run_dir / "rejects.jsonl").read_text().splitlines()]
    splits = pl.concat([pl.read_parquet(demo_run.run_dir / "splits" / f"{s}.parquet") for s in ("train", "val", "test")])
    for source, counts in manifest["sources"].items():
        kept = splits.filter(pl.col("source") == source)["id"].n_unique()
        rejected = sum(1 for r in rejects if r["source"] == source)
        assert counts["kept"] == kept
        assert counts["rejected"] == rejected
        assert counts["read"] == kept + rejected
    # The demo data plants bad records and duplicates: all of them must show up as rejects with reasons.
    reasons = {r["reason"] for r in rejects}
    assert "exact_duplicate" in reasons
    assert "near_duplicate" in reasons
    assert "parse_error" in reasons
    assert all(r["detail"] for r in rejects)


def test_run_folder_holds_every_output(demo_run):
    d = demo_run.run_dir
    for split in ("train", "val", "test"):
        assert (d / "splits" / f"{split}.parquet").is_file()
        rows = [json.loads(x) for x in (d / "splits" / f"{split}.alpaca.jsonl").read_text().splitlines()]
        assert rows and {"instruction", "input", "output"} <= set(rows[0])
    tok = datasets.load_from_disk(str(d / "tokenized"))
    assert set(tok) == {"train", "val", "test"}
    assert {"input_ids", "attention_mask", "labels", "source"} <= set(tok["train"].column_names)
    assert tok["val"].num_rows == demo_run.manifest["splits"]["val"]
    for split, routes in demo_run.manifest["tokenize"]["encoded"].items():   # a prompt and a response per record
        assert sum(routes.values()) == 2 * demo_run.manifest["splits"][split] and routes["piecewise"] > 0
    clusters = [json.loads(x) for x in (d / "clusters.jsonl").read_text().splitlines()]
    kept_ids = set(pl.concat([pl.read_parquet(d / "splits" / f"{s}.parquet") for s in ("train", "val", "test")])["id"])
    assert clusters and all(c["kept_id"] in kept_ids or c["kept_id"] in {x["removed_id"] for x in clusters} for c in clusters)
    m = demo_run.manifest
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert m["libraries"]["polars"] and m["seed"] == 1234 and len(m["fingerprint"]) == 16
    assert json.loads((d / "template.json").read_text())["name"] == "alpaca"


def test_rerun_with_nothing_changed_reuses_the_run(demo_run):
    again = run_build(_demo_config(demo_run.run_dir), base_dir=PIPELINE.parent, show_progress=False)
    assert again.reused == ["all"]
    assert again.manifest["fingerprint"] == demo_run.manifest["fingerprint"]


def test_changed_stage_reuses_earlier_stages_and_is_deterministic(tmp_path, demo_run):
    out = tmp_path / "run"
    first = run_build(_demo_config(out), base_dir=PIPELINE.parent, show_progress=False)
    assert first.manifest["fingerprint"] == demo_run.manifest["fingerprint"]
    changed = run_build(_demo_config(out, **{"split.train": 0.7, "split.val": 0.2}), overwrite=True, base_dir=PIPELINE.parent,
                        show_progress=False)
    assert {"collect", "clean", "dedupe_exact", "dedupe_near"} <= set(changed.reused)
    assert changed.manifest["fingerprint"] != first.manifest["fingerprint"]


def test_writing_into_another_runs_folder_is_refused(tmp_path, demo_run):
    with pytest.raises(StateError, match="different run"):
        run_build(_demo_config(demo_run.run_dir, seed=99), base_dir=PIPELINE.parent, show_progress=False)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(StateError, match="not empty"):
        run_build(_demo_config(stray), base_dir=PIPELINE.parent, show_progress=False)


def test_alpaca_jsonl_rows_carry_system_and_history_only_when_set():
    from dataforge.data.pipeline import _alpaca_lines
    from dataforge.data.record import RECORD_SCHEMA

    turn = [{"role": "user", "content": "earlier \"q\""}, {"role": "assistant", "content": "é\na"}]
    frame = pl.DataFrame([
        {"id": f"s:0:{i}", "source": "s", "origin_file": "f", "origin_line": i, "system": system, "history": history,
         "instruction": "do\tit", "input": "", "output": "done"}
        for i, (system, history) in enumerate([("", []), ("be brief", []), ("", turn), ("be brief", turn)])
    ], schema=RECORD_SCHEMA)
    rows = [json.loads(x) for x in _alpaca_lines(frame)]
    base = ["instruction", "input", "output"]
    assert [list(r) for r in rows] == [base + ["source", "id"], base + ["system", "source", "id"],
                                       base + ["history", "source", "id"], base + ["system", "history", "source", "id"]]
    assert rows[3] == {"instruction": "do\tit", "input": "", "output": "done", "system": "be brief",
                       "history": turn, "source": "s", "id": "s:0:3"}

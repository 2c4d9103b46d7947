"""The whole quickstart at toy size: every artifact is written, the accounting of the build and of
self-instruct holds, every output names the fingerprint of the input it was made from, and an
immediate rerun reuses every step and gives the same results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from dataforge.eval.results import load_results
from dataforge.models import model_fingerprint
from dataforge.paths import TINY_MODEL_DIR
from dataforge.quickstart import run_quickstart
from dataforge.quickstart.run import TUNES
from dataforge.util.fingerprint import sha256_tree

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").is_file(), reason="tiny model not built")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = tmp_path_factory.mktemp("qs") / "run"
    first = run_quickstart(out, size="small", show_progress=False)
    second = run_quickstart(out, size="small", show_progress=False)
    return out, first, second


def test_every_artifact_is_written(runs):
    out, first, _ = runs
    for name in TUNES:
        assert (out / "build" / name / "splits" / "test.parquet").is_file()
        assert (out / "build" / name / "tokenized").is_dir()
        assert (out / "train" / name / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "train" / name / "loss_curve.png").is_file()
        assert (out / "compare" / f"{name}.json").is_file()
    for label in ("base", *TUNES):
        assert (out / "eval" / label / "metrics.json").is_file()
    for f in ("tasks.alpaca.jsonl", "pool.jsonl", "rejects.jsonl", "manifest.json"):
        assert (out / "self-instruct" / f).is_file()
    assert first.report_html.is_file() and first.report_md.is_file()
    html = first.report_html.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    pngs = sorted(p.name for p in (out / "report" / "report_files").glob("*.png"))
    assert "task_scores.png" in pngs
    assert _json(out / "quickstart.json")["kind"] == "quickstart"


def test_build_and_self_instruct_accounting_holds(runs):
    out, _, _ = runs
    for name in TUNES:
        manifest = _json(out / "build" / name / "manifest.json")
        for src, s in manifest["sources"].items():
            assert s["read"] == s["kept"] + s["rejected"], src
            rejects = pl.read_ndjson(out / "build" / name / "rejects.jsonl").filter(pl.col("source") == src)
            assert rejects.height == s["rejected"]
        kept = sum(pl.read_parquet(out / "build" / name / "splits" / f"{sp}.parquet").height
                   for sp in ("train", "val", "test"))
        assert kept == sum(s["kept"] for s in manifest["sources"].values())
    # the domain-only build trains on domain records alone; the mixed one on both
    assert _json(out / "build" / "domain-only" / "manifest.json")["sources"]["general"]["by_split"]["train"] == 0
    assert _json(out / "build" / "mixed" / "manifest.json")["sources"]["general"]["by_split"]["train"] > 0

    si = _json(out / "self-instruct" / "manifest.json")
    acc = si["accounting"]
    rejects = [json.loads(line) for line in (out / "self-instruct" / "rejects.jsonl").read_text().splitlines()]
    assert acc["candidates"] == acc["accepted"] + acc["rejected"]
    assert acc["rejected"] == sum(r["stage"] in ("instruction", "task") for r in rejects)
    accepted_in_pool = sum(1 for line in (out / "self-instruct" / "pool.jsonl").read_text().splitlines()
                           if json.loads(line)["status"] == "accepted")
    assert accepted_in_pool == acc["accepted"]
    assert si["num_prompts"] <= 4


def test_every_output_names_the_fingerprint_of_its_input(runs):
    out, first, _ = runs
    for name in TUNES:
        build = _json(out / "build" / name / "manifest.json")
        train = _json(out / "train" / name / "manifest.json")
        assert train["complete"] and train["data"]["fingerprint"] == build["fingerprint"]
        assert Path(train["data"]["run_dir"]) == out / "build" / name

        adapter = out / "train" / name / "adapter"
        ev = _json(out / "eval" / name / "manifest.json")
        assert Path(ev["adapter"]) == adapter
        assert ev["model_fingerprint"] == model_fingerprint("tiny", str(adapter))
        test_split = out / "build" / "domain-only" / "splits" / "test.parquet"
        assert ev["data"]["domain_test_split"]["sha256"] == sha256_tree(test_split)
        # both builds split identically, so both tunes are scored on the test split of their own build
        assert sha256_tree(out / "build" / name / "splits" / "test.parquet") == sha256_tree(test_split)

    base = _json(out / "eval" / "base" / "manifest.json")
    assert base["adapter"] is None and base["model_fingerprint"] == model_fingerprint("tiny")
    report = _json(out / "report" / "manifest.json")
    assert [i["label"] for i in report["inputs"]] == ["base", *TUNES]
    for item in report["inputs"]:
        assert item["run_id"] == load_results(item["path"]).run_id
    for name in TUNES:
        comp = _json(out / "compare" / f"{name}.json")
        assert comp["base_run_id"] == load_results(out / "eval" / "base").run_id
        assert comp["tuned_run_id"] == load_results(out / "eval" / name).run_id


def test_summary_is_read_off_the_results(runs):
    out, first, _ = runs
    base = load_results(out / "eval" / "base")
    for name in TUNES:
        tuned = load_results(out / "eval" / name)
        d = first.summary["tunes"][name]["domain"]["domain_test_split"]
        assert d["base"] == pytest.approx(base.value("domain_test_split", "rougeL"))
        assert d["tuned"] == pytest.approx(tuned.value("domain_test_split", "rougeL"))
        p = first.summary["tunes"][name]["general_perplexity"]["general_heldout_perplexity"]
        assert p["tuned"] == pytest.approx(tuned.value("general_heldout_perplexity", "perplexity"))
        assert p["relative"] == pytest.approx(p["tuned"] / p["base"] - 1)
    assert [c["claim"] for c in first.summary["claims"]] == [
        "the domain-only tune gains on the domain task", "it forgets more on general text than the mixed tune"]


def test_an_immediate_rerun_reuses_every_step(runs):
    out, first, second = runs
    assert [s.name for s in second.steps] == ["build", "self-instruct", "tune", "eval", "compare", "report"]
    assert all(s.reused for s in second.steps), [(s.name, s.reused) for s in second.steps]
    assert not any(s.reused for s in first.steps)
    assert second.summary == first.summary
    manifest = _json(out / "quickstart.json")
    assert all(s["reused"] for s in manifest["steps"])

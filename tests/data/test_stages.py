"""The stage list is the build: a stage added in a test alone is run, cached and accounted like the
rest, and the docs state the order of the list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from dataforge.config.base import load_config
from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.data.stage import BuildContext, Stage, StageResult, make_rejects
from dataforge.data.stages import BUILD_STAGES
from dataforge.paths import pipelines_dir

PIPELINE = pipelines_dir() / "build_alpaca.yaml"
REPO = Path(__file__).resolve().parents[2]


class DropShortOutputs(Stage):
    """A stage that exists only in this test: drop records whose output has fewer than `min_words` words."""

    name, section = "drop_short", "clean"

    def __init__(self, min_words: int):
        self.min_words = min_words

    def settings(self, ctx: BuildContext) -> dict:
        return {"min_words": self.min_words}

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        short = frame.get_column("output").str.split(" ").list.len() < self.min_words
        return StageResult(kept=frame.filter(~short), rejected=make_rejects(
            frame.filter(short), self.name, "short_output", f"output has fewer than {self.min_words} words"))


def _build(out: Path, min_words: int, **overrides):
    stages = [*BUILD_STAGES[:2], DropShortOutputs(min_words), *BUILD_STAGES[2:]]
    cfg = load_config(BuildConfig, PIPELINE, {"output": str(out), "decontaminate.enabled": False, **overrides})
    return run_build(cfg, base_dir=PIPELINE.parent, show_progress=False, overwrite=True, stages=stages)


def test_a_stage_added_to_the_list_is_counted_cached_and_accounted(tmp_path):
    out = tmp_path / "run"
    first = _build(out, 12)
    steps = {s["name"]: s for s in first.manifest["steps"]}
    names = [s["name"] for s in first.manifest["steps"]]
    assert names.index("clean") + 1 == names.index("drop_short")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    dropped = [r for r in rejects if r["stage"] == "drop_short"]
    assert dropped and all(len(json.loads(r["record"])["output"].split(" ")) < 12 for r in dropped)
    toy = steps["drop_short"]
    assert toy["in"] == steps["clean"]["out"] and toy["out"] == toy["in"] - len(dropped)
    assert toy["dropped"] == {"short_output": len(dropped)} and not toy["reused"]
    published = pl.concat([pl.read_parquet(out / "splits" / f"{s}.parquet") for s in ("train", "val", "test")])
    assert published.get_column("output").str.split(" ").list.len().min() >= 12
    for source, counts in first.manifest["sources"].items():
        assert counts["read"] == counts["kept"] + counts["rejected"]
        assert counts["rejected_by_reason"].get("short_output", 0) == sum(r["source"] == source for r in dropped)

    resplit = _build(out, 12, **{"split.train": 0.7, "split.val": 0.2})   # downstream change: the toy is reused
    assert {"collect", "clean", "drop_short", "dedupe_exact", "dedupe_near"} <= set(resplit.reused)
    assert [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines() if '"drop_short"' in x] == dropped

    stricter = _build(out, 15)   # its own setting changed: it and everything after it re-run
    ran = [s["name"] for s in stricter.manifest["steps"] if not s["reused"]]
    assert ran == names[names.index("drop_short"):]
    assert {s["name"]: s for s in stricter.manifest["steps"]}["drop_short"]["dropped"]["short_output"] > len(dropped)


def _order(text: str) -> list[str]:
    return re.findall(r"[a-z_]+", text)


def test_help_readme_and_architecture_state_the_order_of_the_stage_list():
    from dataforge.cli.main import app

    order = [s.name for s in BUILD_STAGES]
    help_text = " ".join(CliRunner().invoke(app, ["build", "--help"], terminal_width=400).output.split())
    stated = re.search(r"Build a dataset: the stages ([a-z_, ]+) in this order", help_text)
    assert stated and _order(stated.group(1)) == order
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("The stages, in order", 1)[1].split("\n\n", 2)[1]
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == order
    arch = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert _order(arch.split("## Stage order", 1)[1].split("\n", 2)[1].split(".")[0]) == order


def test_reseeding_the_build_keeps_dedupe_and_reseeds_the_split(tmp_path):
    """The build's `seed` drives split, mix and template only; MinHash has `dedupe.near.seed`."""
    from dataforge.data.runner import FileHashes, plan

    def keys(**overrides) -> dict[str, str]:
        cfg = load_config(BuildConfig, PIPELINE, {"output": str(tmp_path / "run"), **overrides})
        return {p.stage.name: p.key for p in plan(BUILD_STAGES, BuildContext(cfg, PIPELINE.parent), FileHashes())}

    base, reseeded, near_reseeded = keys(), keys(seed=99), keys(**{"dedupe.near.seed": 99})
    upstream = ["collect", "clean", "dedupe_exact", "dedupe_near", "decontaminate"]
    assert [base[k] == reseeded[k] for k in base] == [k in upstream for k in base]
    assert [base[k] == near_reseeded[k] for k in base] == [k in upstream[:3] for k in base]


def test_reference_dedupe_has_its_own_near_settings(tmp_path):
    from dataforge.data.record import RECORD_SCHEMA
    from dataforge.data.stages import ReferenceDedupe

    words = ("the harbour lights were lit one by one as the fishing boats came home through the evening fog "
             "and the keeper counted every hull that passed the breakwater before he closed the log").split()
    copy = " ".join(w if i != 10 else "trawlers" for i, w in enumerate(words))  # one word changed
    ref = tmp_path / "release1.jsonl"
    ref.write_text(json.dumps({"instruction": "Describe the harbour.", "output": " ".join(words)}) + "\n")
    frame = pl.DataFrame([{"id": "a", "source": "s", "origin_file": "f", "origin_line": 1, "system": "", "history": [],
                           "instruction": "Describe the harbour.", "input": "", "output": copy}], schema=RECORD_SCHEMA)

    def removed(**overrides) -> int:
        cfg = load_config(BuildConfig, PIPELINE, {"dedupe.reference": [{"path": str(ref)}], **overrides})
        return ReferenceDedupe().run(frame, BuildContext(cfg)).rejected.height

    assert removed() == 1                                               # the in-set near settings (0.8)
    assert removed(**{"dedupe.reference_near": {"threshold": 0.99}}) == 0
    assert removed(**{"dedupe.near.threshold": 0.99}) == 0               # unset, it follows the in-set settings
    assert removed(**{"dedupe.near.threshold": 0.99, "dedupe.reference_near": {"threshold": 0.8}}) == 1

"""Small build run folders for the training tests, made from the bundled demo data.

The folders are made with the build's own template, tokenize and pack functions and written in the
run-folder format of docs/ARCHITECTURE.md; only the collect/clean/dedupe stages are skipped, so
these tests stay fast. One test (test_pipeline_data) goes through `run_build` end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.paths import DEMO_DATA_DIR, TINY_MODEL_DIR

MAX_LENGTH = 128


def _demo_records() -> list[dict]:
    rows = []
    for i, line in enumerate((DEMO_DATA_DIR / "domain.jsonl").read_text(encoding="utf-8").splitlines()):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and str(r.get("instruction") or "").strip() and str(r.get("output") or "").strip():
            rows.append({"id": f"domain:{i}", "source": "domain", "instruction": r["instruction"],
                         "input": r.get("input") or "", "output": r["output"]})
    for i, line in enumerate((DEMO_DATA_DIR / "general.jsonl").read_text(encoding="utf-8").splitlines()):
        try:
            turns = json.loads(line)["conversations"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if len(turns) >= 2 and str(turns[0].get("value") or "").strip() and str(turns[1].get("value") or "").strip():
            rows.append({"id": f"general:{i}", "source": "general", "instruction": turns[0]["value"],
                         "input": "", "output": turns[1]["value"]})
    return rows


def make_build_run(root: Path, *, packed: bool = False, sources: tuple[str, ...] = ("domain", "general"),
                   max_length: int = MAX_LENGTH, val_every: int = 20) -> Path:
    """A build run folder: every `val_every`-th record of each source goes to val, the rest to train."""
    import datasets
    import polars as pl

    from dataforge.config.build import TokenizeConfig
    from dataforge.data.pack import pack_best_fit
    from dataforge.data.templates import load_template, render
    from dataforge.data.tokenize import tokenize_records
    from dataforge.models import load_tokenizer
    from dataforge.util.fingerprint import fingerprint

    template = load_template("alpaca")
    tokenizer = load_tokenizer("tiny")
    records = [r for r in _demo_records() if r["source"] in sources]
    for r in records:
        r["prompt"], r["response"] = render(template, r["instruction"], r["input"], output=r["output"])
    frame = pl.DataFrame(records)
    cfg = TokenizeConfig(tokenizer="tiny", max_length=max_length, pack=packed)
    number = pl.int_range(pl.len()).over("source")
    splits = {"train": frame.filter(number % val_every != 0), "val": frame.filter(number % val_every == 0)}
    tables, counts = {}, {}
    for name, part in splits.items():
        table = tokenize_records(part, tokenizer, cfg).table
        counts[name] = part.group_by("source").len().rows()
        if packed and name == "train":
            table = pack_best_fit(table, max_length).table
        tables[name] = datasets.Dataset(table)
    run = root / ("packed" if packed else "plain") / "-".join(sources)
    datasets.DatasetDict(tables).save_to_disk(str(run / "tokenized"))
    template_info = {"name": template.name, "sha256": template.sha256, "variants": False}
    (run / "template.json").write_text(json.dumps(template_info), encoding="utf-8")
    by_source = {s: {"by_split": {k: dict(counts[k]).get(s, 0) for k in counts}} for s in sources}
    manifest = {"kind": "build", "complete": True, "fingerprint": fingerprint(records, packed, max_length),
                "sources": by_source, "template": template_info,
                "tokenize": {"tokenizer": "tiny", "max_length": max_length, "packed": packed,
                             "padding_side": "right", "pad_to_multiple_of": None}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def tiny_model_ready() -> None:
    if not (TINY_MODEL_DIR / "config.json").is_file():
        pytest.fail(f"the built-in tiny model is missing from {TINY_MODEL_DIR}")


@pytest.fixture(scope="session")
def build_run(tmp_path_factory, tiny_model_ready) -> Path:
    return make_build_run(tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="session")
def packed_build_run(tmp_path_factory, tiny_model_ready) -> Path:
    return make_build_run(tmp_path_factory.mktemp("builds"), packed=True)

"""`dataforge inspect` on a run folder built here with the real template, tokenizer and packer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from dataforge.cli import inspect as inspect_cli
from dataforge.config.build import TokenizeConfig
from dataforge.data.pack import pack_best_fit
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.templates import apply_template, load_template
from dataforge.data.tokenize import IGNORE_INDEX, tokenize_records
from dataforge.models import load_tokenizer

MAX_LENGTH = 256


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test shell holding only the inspect command."""

    inspect_cli.register(app)
    return app


def make_run(root: Path, tok, pack: bool) -> dict[str, pl.DataFrame]:
    """A run folder in the layout the build writes: splits/*.parquet, tokenized/, manifest.json."""
    rows = []
    for i in range(30):
        source = "domain" if i % 3 else "general"
        rows.append({"id": f"{source}:0:{i}", "source": source, "origin_file": f"{source}.jsonl", "origin_line": i + 1,
                     "system": "", "history": [], "instruction": f"Describe item {i} of the list.",
                     "input": "" if i % 2 else f"item-{i}", "output": f"Item {i} is a {'red blue green'.split()[i % 3]} widget."})
    records = pl.DataFrame(rows, schema=RECORD_SCHEMA)
    splits = {"train": records.head(20), "val": records.slice(20, 6), "test": records.slice(26, 4)}
    template = load_template("alpaca")
    tables = {}
    for name, frame in splits.items():
        splits[name] = apply_template(frame, template, seed=0, variants=False)
        table = tokenize_records(splits[name], tok, TokenizeConfig(max_length=MAX_LENGTH)).table
        if pack and name == "train":
            table = pack_best_fit(table, MAX_LENGTH).table
        tables[name] = datasets.Dataset(table)
        (root / "splits").mkdir(parents=True, exist_ok=True)
        splits[name].write_parquet(root / "splits" / f"{name}.parquet")
    datasets.DatasetDict(tables).save_to_disk(str(root / "tokenized"))
    manifest = {"kind": "build", "tokenize": {"tokenizer": "tiny", "max_length": MAX_LENGTH}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return splits


def test_inspect_shows_counts_lengths_and_exactly_the_trained_text(tmp_path, tok, app):
    splits = make_run(tmp_path, tok, pack=False)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--plain", "--samples", "2", "--split", "val"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    for source in ("domain", "general"):
        counts = [splits[s].filter(pl.col("source") == source).height for s in ("train", "val", "test")]
        assert re.search(rf"{source}\s*│\s*{counts[0]}\s*│\s*{counts[1]}\s*│\s*{counts[2]}\s*│\s*{sum(counts)}", out)
    val_ids = datasets.load_from_disk(str(tmp_path / "tokenized"))["val"]["input_ids"]
    lengths = [len(x) for x in val_ids]
    assert re.search(rf"val\s*│\s*6\s*│\s*{min(lengths)}\s*│.*│\s*{max(lengths)}\s*│", out)
    png = tmp_path / "inspect" / "lengths.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The marked spans are exactly the decoded label-carrying tokens of the sampled rows.
    val = datasets.load_from_disk(str(tmp_path / "tokenized"))["val"]
    picked = sorted(np.random.default_rng(0).choice(len(val), size=2, replace=False).tolist())
    marked = re.findall(r"⟦(.*?)⟧", out.split("\n--- ", 1)[1], flags=re.S)
    expected = []
    for row in picked:
        trained = [t for t, lab in zip(val[row]["input_ids"], val[row]["labels"], strict=True) if lab != IGNORE_INDEX]
        expected.append(tok.decode(trained, skip_special_tokens=False))
    assert marked == expected
    assert all(e.endswith(tok.eos_token) for e in expected)
    assert out.count(f"--- val[{picked[0]}] (") == 1 and "Below is an instruction" in out


def test_inspect_marks_trained_text_in_a_log_without_plain(tmp_path, tok, app):
    """Piped to a file, colours are gone, so the trained spans must still be marked."""
    make_run(tmp_path, tok, pack=False)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--samples", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output
    sample = result.output.split("\n--- ", 1)[1]
    assert sample.count("⟦") == sample.count("⟧") >= 1 and tok.eos_token + "⟧" in sample


def test_inspect_splits_packed_rows_into_their_records(tmp_path, tok, app):
    make_run(tmp_path, tok, pack=True)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--plain", "--samples", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    train = datasets.load_from_disk(str(tmp_path / "tokenized"))["train"]
    row = np.random.default_rng(0).choice(len(train), size=1).tolist()[0]
    n_records = train[row]["position_ids"].count(0)
    assert n_records > 1
    assert result.output.count(f"--- train[{row}] record ") == n_records
    assert "train (packed)" in result.output


def test_inspect_an_unknown_split_names_the_available_ones(tmp_path, tok, app):
    make_run(tmp_path, tok, pack=False)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--split", "dev"])
    assert "no split 'dev'" in str(result.exception) and "train, val, test" in str(result.exception)


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "no manifest.json"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{not json")), "manifest is not valid JSON"),
])
def test_inspect_a_bad_folder_exits_2_with_one_message(tmp_path, setup, message):
    run = tmp_path / "run"
    setup(run)
    proc = subprocess.run([sys.executable, "-m", "dataforge", "inspect", str(run)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert message in proc.stderr and str(run) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_build_with_an_empty_split_can_be_inspected_and_trained_on(tmp_path, app):
    """split.val=0 leaves val empty: it is still a loadable dataset with the features of the others."""
    from dataforge.config.build import BuildConfig
    from dataforge.data.pipeline import run_build
    from dataforge.train.data import load_build_run

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Name step {i} of the checklist.", "input": "",
                                        "output": f"Step {i} is to log reading {i * 7} in the sheet."}) + "\n"
                            for i in range(30)))
    run = tmp_path / "run"
    cfg = BuildConfig(inputs=[{"path": str(data), "source": "s"}], output=str(run), split={"val": 0, "test": 0.1})
    run_build(cfg, show_progress=False)
    val = datasets.load_from_disk(str(run / "tokenized"))["val"]
    assert val.num_rows == 0
    assert set(val.column_names) == {"input_ids", "attention_mask", "labels", "source", "id"}

    result = CliRunner().invoke(app, ["inspect", str(run), "--plain", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"│ val\s+│\s+0 │", result.output)

    data = load_build_run(run)
    assert data.val is None and data.train.num_rows == 27

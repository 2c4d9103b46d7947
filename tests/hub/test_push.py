"""`dataforge push`: the card states the manifest's numbers, the staged folder is exactly what would
be uploaded, the saved tokenizer carries the training chat template, and a push that cannot reach the
Hub (HF_HUB_OFFLINE=1) is one clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataforge.cli.main import app
from dataforge.data.templates import load_template, render
from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.predictions import score_predictions

FIXTURES = Path(__file__).parent / "fixtures"
EVAL_FIXTURES = Path(__file__).parents[1] / "eval" / "fixtures"
ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _tables(card: str) -> dict[str, list[dict[str, str]]]:
    """Each Markdown table of the card under its heading, as rows of {column: cell}."""
    out, heading, lines = {}, None, card.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        elif line.startswith("| ") and (i == 0 or not lines[i - 1].startswith("|")):
            head = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, [c.strip() for c in row.strip().strip("|").split(" | ")], strict=True)))
            out[heading] = rows
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "build"
    _cli("build", str(FIXTURES / "build.yaml"), "-o", str(out), "-q")
    return out


def test_dataset_card_states_the_builds_counts(build, tmp_path):
    from huggingface_hub import DatasetCard

    _cli("push", str(build), "--repo", "someone/kestrel-support", "--to-folder", str(tmp_path / "stage"))
    stage = tmp_path / "stage"
    manifest = json.loads((build / "manifest.json").read_text())
    staged = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert staged == ["README.md", "contamination.jsonl", "manifest.json", "rejects.jsonl", "splits/test.parquet",
                      "splits/train.parquet", "splits/val.parquet", "template.json"]
    assert (stage / "splits/train.parquet").read_bytes() == (build / "splits/train.parquet").read_bytes()

    card = DatasetCard.load(stage / "README.md")
    assert card.data.configs[0]["data_files"] == [{"split": s, "path": f"splits/{s}.parquet"} for s in ("train", "val", "test")]
    assert card.data.size_categories == ["n<1K"] and "dataforge" in card.data.tags
    tables = _tables(card.text)

    # independent of the manifest: every rejected record, counted from rejects.jsonl
    rejects = [json.loads(x) for x in (build / "rejects.jsonl").read_text().splitlines()]
    by_reason = Counter((r["reason"], r["source"]) for r in rejects)
    assert {r["reason"] for r in rejects} == {"parse_error", "empty_output", "exact_duplicate", "near_duplicate",
                                             "contaminated"}
    for row in tables["Rejected records by reason"]:
        assert int(row["support"]) == by_reason[(row["reason"], "support")]
        assert int(row["chat"]) == by_reason[(row["reason"], "chat")]
        assert int(row["total"]) == sum(v for (reason, _), v in by_reason.items() if reason == row["reason"])
    assert len(tables["Rejected records by reason"]) == len({r["reason"] for r in rejects})

    for row in tables["Sources"]:
        src = manifest["sources"][row["source"]]
        assert [int(row[k]) for k in ("read", "kept", "rejected", "train", "val", "test")] == [
            src["read"], src["kept"], src["rejected"], *(src["by_split"][s] for s in ("train", "val", "test"))]
        assert int(row["rejected"]) == sum(1 for r in rejects if r["source"] == row["source"])
    dedup = {row["step"]: int(row["removed"]) for row in tables["Deduplication and decontamination"]}
    assert dedup == {"dedupe_exact": 1, "dedupe_near": 1, "decontaminate": 1}
    assert dedup["decontaminate"] == len((build / "contamination.jsonl").read_text().splitlines())
    assert f"`{manifest['template']['sha256']}`" in card.text and "name: `alpaca`" in card.text


def test_push_without_the_hub_is_one_message_not_a_traceback(build):
    proc = subprocess.run([sys.executable, "-m", "dataforge", "push", str(build), "--repo", "someone/kestrel"],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot push someone/kestrel: HF_HUB_OFFLINE is set" in proc.stderr and "--to-folder" in proc.stderr


def test_adapter_and_merged_model_carry_the_training_chat_template_and_a_model_card(build, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    run = tmp_path / "train"
    _cli("train", "--data", str(build), "--model", "tiny", "-o", str(run), "--max-steps", "2", "--batch-size", "4",
         "--set", "eval.at_start=false", "--set", "lora.r=4", "-q")
    _cli("export", str(run), "-o", str(tmp_path / "merged"), "--merge")
    template = load_template("alpaca")
    messages = [{"role": "user", "content": "Why does my Kestrel T2 show E4?"}]
    expected, _ = render(template, messages[0]["content"])
    for folder in (run / "adapter", tmp_path / "merged"):
        saved = AutoTokenizer.from_pretrained(str(folder))
        assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
        on_disk = (folder / "chat_template.jinja").read_text() if (folder / "chat_template.jinja").is_file() else \
            json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
        assert "Below is an instruction that describes a task." in on_disk

    base = score_predictions(EVAL_FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=tmp_path / "base",
                             n_boot=200)
    tuned = score_predictions(EVAL_FIXTURES / "tuned_predictions.csv",
                              {"prompt": "question", "prediction": "answer", "reference": "gold"},
                              GenerationScoring(), out=tmp_path / "tuned", n_boot=200)
    result = CliRunner().invoke(app, ["compare", str(base), str(tuned), "--n-boot", "200", "--json", str(tmp_path / "c.json")])
    assert result.exit_code in (0, 1), result.output
    _cli("push", str(run), "--repo", "someone/kestrel-lora", "--compare", str(tmp_path / "c.json"),
         "--to-folder", str(tmp_path / "stage"))
    stage = tmp_path / "stage"
    staged = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
    adapter = {p.relative_to(run / "adapter").as_posix() for p in (run / "adapter").rglob("*") if p.is_file()}
    assert staged == adapter | {"README.md", "training/manifest.json", "training/train_log.jsonl", "training/loss_curve.png"}
    assert {"adapter_model.safetensors", "adapter_config.json", "template.json"} <= adapter

    card = ModelCard.load(stage / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model is None  # 'tiny' is no hub id
    train = json.loads((run / "manifest.json").read_text())
    comp = json.loads((tmp_path / "c.json").read_text())
    tables = _tables(card.text)
    rows = {(r["task"], r["metric"].rstrip(" *")): r for r in tables["Evaluation against the base model"]}
    for task, t in comp["tasks"].items():
        for name, d in t["metrics"].items():
            row = rows[(f"{task} ({t['tag']})", name)]
            assert float(row["Δ"]) == pytest.approx(d["delta"], rel=1e-3, abs=1e-4)
            lo, hi = (float(x) for x in re.findall(r"[-\d.e+]+", row["95% CI"]))
            assert (lo, hi) == (pytest.approx(d["ci_low"], rel=1e-3, abs=1e-4), pytest.approx(d["ci_high"], rel=1e-3, abs=1e-4))
    by_source = {r["source"]: int(r["train rows"]) for r in tables["Training data by source"]}
    assert by_source == train["data"]["train_by_source"] == {"chat": 3, "support": 4}
    assert {r["source"] for r in tables["Sources"]} == {"chat", "support"}  # the build's card sections

    _cli("push", str(tmp_path / "merged"), "--repo", "someone/kestrel-merged", "--to-folder", str(tmp_path / "stage2"))
    merged_card = ModelCard.load(tmp_path / "stage2" / "README.md")
    assert merged_card.data.library_name == "transformers"
    assert (tmp_path / "stage2" / "model.safetensors").read_bytes() == (tmp_path / "merged" / "model.safetensors").read_bytes()

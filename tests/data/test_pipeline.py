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


# ---------------------------------------------------------------- cache keys cover every file read

def _published(run_dir: Path) -> tuple:
    """Everything a build publishes that a user or trainer reads, for an independent comparison."""
    splits = tuple(pl.read_parquet(run_dir / "splits" / f"{s}.parquet").drop("origin_file").rows() for s in ("train", "val", "test"))
    tok = datasets.load_from_disk(str(run_dir / "tokenized"))
    tables = tuple(tok[s].data.table.to_pydict() for s in ("train", "val", "test"))
    return splits, tables, (run_dir / "template.json").read_text()


def _words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def test_editing_any_file_a_stage_reads_reruns_exactly_the_stages_downstream(tmp_path):
    """The template, each tokenizer file, a reference set, a decontamination set and suite data
    outside evals/ are edited one at a time; each rebuild re-runs exactly the stages downstream of
    that file, and the fingerprint changes exactly when the published content does."""
    import shutil

    from dataforge.paths import TINY_MODEL_DIR, templates_dir

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        shutil.copy(TINY_MODEL_DIR / name, tok_dir / name)
    template = tmp_path / "mytemplate.yaml"
    shutil.copy(templates_dir() / "alpaca.yaml", template)
    unrelated = {"instruction": "Name a colour of the sky at noon.", "input": "", "output": "Blue, on a clear day at noon."}
    reference, eval_set = tmp_path / "reference.jsonl", tmp_path / "eval_set.jsonl"
    reference.write_text(json.dumps(unrelated) + "\n")
    eval_set.write_text(json.dumps(unrelated) + "\n")
    corpus = tmp_path / "heldout" / "corpus.txt"   # suite data outside evals/
    corpus.parent.mkdir()
    corpus.write_text("A held-out paragraph about lighthouses, tides and the keepers who tended them.\n")
    (tmp_path / "suite" / "tasks").mkdir(parents=True)
    (tmp_path / "suite" / "tasks" / "ppl.yaml").write_text(
        f"name: heldout\ntype: perplexity\ndata:\n  path: {corpus}\n")
    suite = tmp_path / "suite" / "mine.yaml"
    suite.write_text("name: mine\ntasks:\n  - {task: tasks/ppl.yaml, tag: general}\n")
    overrides = {"template.name": str(template), "tokenize.tokenizer": str(tok_dir),
                 "dedupe.reference": [{"path": str(reference)}],
                 "decontaminate.sets": [{"path": str(eval_set)}], "decontaminate.suite": str(suite)}
    out = tmp_path / "run"

    def build() -> tuple[set[str], str, tuple]:
        result = run_build(_demo_config(out, **overrides), base_dir=PIPELINE.parent, show_progress=False)
        assert result.reused != ["all"]
        ran = {s["name"] for s in result.manifest["steps"] if not s["reused"]}
        return ran, result.manifest["fingerprint"], _published(out)

    ran, fp, content = build()
    assert ran == {"collect", "clean", "dedupe_exact", "dedupe_near", "dedupe_reference", "decontaminate", "split",
                   "template", "tokenize"}
    train = pl.read_parquet(out / "splits" / "train.parquet")
    long = train.filter(pl.col("output").str.split(" ").list.len() >= 20)
    victims = long.head(3).to_dicts()

    def edit_json(path: Path, change) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=1))

    def swap_ids(t: dict) -> None:
        vocab = t["model"]["vocab"]
        vocab["Ġthe"], vocab["Ġa"] = vocab["Ġa"], vocab["Ġthe"]

    tokenize_only = {"tokenize"}
    from_reference = {"dedupe_reference", "decontaminate", "split", "template", "tokenize"}
    from_decontaminate = {"decontaminate", "split", "template", "tokenize"}
    edits = [  # (what, edit, stages that must re-run, must the published content change)
        ("template", lambda: template.write_text(template.read_text().replace("Below is an instruction", "Here is an instruction")),
         {"template", "tokenize"}, True),
        ("tokenizer.json", lambda: edit_json(tok_dir / "tokenizer.json", swap_ids), tokenize_only, True),
        ("tokenizer_config.json", lambda: edit_json(tok_dir / "tokenizer_config.json", lambda c: c.update(eos_token="<unk>")),
         tokenize_only, True),
        ("chat_template.jinja", lambda: (tok_dir / "chat_template.jinja").write_text(
            (tok_dir / "chat_template.jinja").read_text() + "{# unused by a text template #}"), tokenize_only, False),
        ("special_tokens_map.json", lambda: (tok_dir / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"})),
         tokenize_only, None),
        ("reference", lambda: reference.write_text(json.dumps({k: victims[0][k] for k in ("instruction", "input", "output")}) + "\n"),
         from_reference, True),
        ("decontamination set", lambda: eval_set.write_text(json.dumps({"text": _words(victims[1]["output"], 20)}) + "\n"),
         from_decontaminate, True),
        ("suite data", lambda: corpus.write_text(corpus.read_text() + _words(victims[2]["output"], 20) + "\n"),
         from_decontaminate, True),
    ]
    for what, edit, expected, changes in edits:
        edit()
        ran, new_fp, new_content = build()
        assert ran == expected, what
        if changes is not None:
            assert (new_content != content) is changes, what
        assert (new_fp != fp) == (new_content != content), what
        fp, content = new_fp, new_content
    final_ids = set(pl.concat([pl.read_parquet(out / "splits" / f"{s}.parquet") for s in ("train", "val", "test")])["id"])
    assert not final_ids & {v["id"] for v in victims}

"""End to end: public-style datasets that no one here designed the build for, through one build.

Every fixture is written for this project in the shape users bring from LLaMA-Factory, axolotl and
the hubs: Alpaca json with stray quotes and a duplicate, ShareGPT with tools and function roles,
OpenAI messages with content parts, KTO-style labels (ignored on purpose), self-instruct seed tasks,
plain text (jsonl and .txt), a reading-comprehension set whose questions share passages, a csv with
a quote that is never closed, and long multilingual records. Per source the test asserts that
records read = kept + rejected, the kept counts, the reasons and the ignored-field report.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tool_tokenizer import tool_tokenizer_folder

from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build

HERE = Path(__file__).parent
PUBLIC = HERE / "fixtures_public"


INPUTS = [
    ("alpaca", "fixtures_public/alpaca.json", {}),
    ("tools", "fixtures_public/sharegpt_tools.jsonl", {}),
    ("parts", "fixtures_public/openai_messages_parts.jsonl", {}),
    ("kto", "fixtures_public/kto_labels.jsonl", {"ignore_fields": ["label"]}),
    ("seeds", "fixtures_public/self_instruct_seeds.jsonl", {}),
    ("text", "fixtures_public/plain_text.jsonl", {}),
    ("text", "fixtures_public/plain_text.txt", {}),
    ("rc", "fixtures_dedupe/reading_comprehension.jsonl", {}),
    ("csv", "fixtures_bad/unclosed_quote.csv", {}),
    ("multi", "fixtures_public/multilingual_long.jsonl", {}),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("public")
    tok = tool_tokenizer_folder(root / "tool-tok")   # renders tools and tool results
    cfg = BuildConfig.model_validate({
        "inputs": [{"path": str(HERE / path), "source": source, **extra} for source, path, extra in INPUTS],
        "output": str(root / "run"),
        "template": {"name": "chat"},
        "tokenize": {"tokenizer": str(tok), "max_length": 512},
    })
    result = run_build(cfg, show_progress=False)
    return result.run_dir, result.manifest


def test_every_source_is_accounted_for_with_its_reasons(built):
    _, manifest = built
    got = {src: (s["read"], s["kept"], s["rejected"], s["rejected_by_reason"]) for src, s in manifest["sources"].items()}
    assert got == {
        # 6 read: an exact duplicate and an empty instruction go; the stray quotes stay in the text.
        "alpaca": (6, 4, 2, {"empty_instruction": 1, "exact_duplicate": 1}),
        # the last conversation ends on a tool turn: nothing to train.
        "tools": (5, 4, 1, {"no_assistant_reply": 1}),
        "parts": (5, 4, 1, {"non_text_content": 1}),
        "kto": (4, 4, 0, {}),
        # 4 seed tasks holding 7 instances: one instance lacks its output, one task holds none.
        "seeds": (7, 5, 2, {"missing_field": 2}),
        "text": (9, 8, 1, {"empty_output": 1}),
        # questions over shared passages are not near duplicates of each other.
        "rc": (21, 21, 0, {}),
        # the unclosed quote costs its own line only.
        "csv": (51, 50, 1, {"parse_error": 1}),
        # long records are truncated after their instruction; one whose instruction alone is too long goes.
        "multi": (7, 6, 1, {"prompt_truncated_away": 1}),
    }
    for s in manifest["sources"].values():
        assert s["read"] == s["kept"] + s["rejected"]


def test_ignored_fields_are_reported_per_source(built):
    _, manifest = built
    collect = next(s for s in manifest["steps"] if s["name"] == "collect")
    ignored = collect["stats"]["ignored_fields"]
    assert ignored["kto"] == {"label": 4}
    assert ignored["tools"] == {"id": 5}
    assert ignored["text"] == {"meta": 5}
    assert "warnings" not in collect["stats"] or not collect["stats"]["warnings"]


def test_meaning_survives_tools_text_and_truncation(built):
    run_dir, manifest = built
    tok = datasets.load_from_disk(str(run_dir / "tokenized"))
    rows = [r for split in tok.values() for r in split]
    assert len(rows) == sum(s["kept"] for s in manifest["sources"].values())
    counts = manifest["tokenize"]["counts"]
    truncated = sum(c["by_source"].get("multi", {}).get("truncated", 0) for c in counts.values())
    assert truncated == 6
    lines = [json.loads(x) for split in ("train", "val", "test")
             for x in (run_dir / "splits" / f"{split}.alpaca.jsonl").read_text(encoding="utf-8").splitlines()]
    tools = [x for x in lines if x["source"] == "tools"]
    assert len(tools) == 4
    assert sum(bool(x.get("tools")) for x in tools) == 3   # the fourth conversation's tools field is empty
    calls = [x for x in tools if x.get("tool_turns")]
    assert len(calls) == 2 and {len(x["tool_turns"]) for x in calls} == {2, 4}
    texts = [x for x in lines if x["source"] == "text"]
    assert len(texts) == 8 and all(set(x) == {"text", "source", "id"} for x in texts)

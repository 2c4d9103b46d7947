"""Public-style formats users bring (LLaMA-Factory's ShareGPT with tools, OpenAI messages with content
parts, KTO labels, self-instruct seeds, plain text): each is read whole, or refused with a reason,
and read = kept + rejected holds. The fixtures in fixtures_public/ are this project's own text."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataforge.config.build import InputSpec, OnError
from dataforge.data.collect import collect
from dataforge.data.record import RECORD_SCHEMA
from dataforge.errors import ConfigError, InputError

PUBLIC = Path(__file__).parent / "fixtures_public"


def read(name: str, on_error: OnError = OnError.skip, **spec):
    res = collect([InputSpec(path=str(PUBLIC / name), source="s", **spec)], on_error)
    assert res.stats["read"]["s"] == res.kept.height + res.rejected.height
    assert dict(res.kept.schema) == RECORD_SCHEMA
    return res


def reasons(res) -> list[tuple[str, str]]:
    return [(r["reason"], r["id"]) for r in res.rejected.to_dicts()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sharegpt_function_call_and_observation_become_tool_turns_with_their_tools():
    res = read("sharegpt_tools.jsonl")
    assert res.kept.height == 4 and reasons(res) == [("no_assistant_reply", "s:0:5")]
    assert "it ends with a tool turn" in res.rejected["detail"][0]
    first = res.kept.row(0, named=True)
    source = json.loads((PUBLIC / "sharegpt_tools.jsonl").read_text(encoding="utf-8").splitlines()[0])
    turns = source["conversations"]
    assert first["system"] == source["system"]
    assert first["instruction"] == turns[0]["value"] and first["output"] == turns[3]["value"]
    assert first["tool_turns"] == [{"role": "assistant", "content": turns[1]["value"]},
                                   {"role": "tool", "content": turns[2]["value"]}]
    assert json.loads(first["tools"]) == json.loads(source["tools"])
    # Two calls in a row keep their order; a conversation with an empty tools string has none.
    third = res.kept.row(2, named=True)
    assert [t["role"] for t in third["tool_turns"]] == ["assistant", "tool", "assistant", "tool"]
    fourth = res.kept.row(3, named=True)
    assert fourth["tools"] == "" and fourth["tool_turns"] == [] and len(fourth["history"]) == 2


def test_roles_mapping_adds_names_and_rejects_unknown_targets(tmp_path):
    rows = [{"conversations": [{"from": "customer", "value": "Refund?"}, {"from": "agent", "value": "Approved."}]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    res = collect([InputSpec(path=str(path), source="s")], OnError.skip)
    assert res.rejected["reason"].to_list() == ["unknown_role"]
    assert "map it with the input's `roles`" in res.rejected["detail"][0]
    res = collect([InputSpec(path=str(path), source="s", roles={"customer": "user", "agent": "assistant"})],
                  OnError.skip)
    assert res.kept.select("instruction", "output").rows() == [("Refund?", "Approved.")]
    with pytest.raises(ConfigError) as info:
        collect([InputSpec(path=str(path), roles={"agent": "bot"})], OnError.skip)
    assert info.value.problems == ["inputs[0].roles.agent: unknown role 'bot'; map to one of: user, assistant, "
                                   "system, tool"]


def test_tools_that_are_not_json_are_a_reject_naming_the_field(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "tools": "[{'name': 1}"}]
    res = collect([InputSpec(path=str(write_jsonl(tmp_path / "t.jsonl", rows)), source="s")], OnError.skip)
    assert res.rejected["reason"].to_list() == ["invalid_tools"]
    assert "field 'tools': is not valid JSON" in res.rejected["detail"][0]


def test_openai_content_parts_are_text_and_other_parts_a_reject():
    res = read("openai_messages_parts.jsonl")
    assert reasons(res) == [("non_text_content", "s:0:3")]
    assert "field 'messages[0].content[1].type': a part of type 'image_url'" in res.rejected["detail"][0]
    rows = res.kept.select("system", "instruction", "output").rows()
    assert rows[0] == ("Answer in one sentence.", "Why do onions make people cry?",
                       "Cutting them releases a sulfur compound that irritates the eyes and triggers tears.")
    assert rows[1][1] == ("Summarise the note below.\nNote: the \"quarterly\" review moves to Thursday; "
                          "bring the draft budget.")
    assert rows[3][0] == "Reply in lowercase."     # the developer role is the system message


def test_self_instruct_seeds_give_one_record_per_instance():
    res = read("self_instruct_seeds.jsonl")
    assert res.stats["read"] == {"s": 7}      # 1 + 3 + 2 instances, and one seed with none
    assert res.kept["id"].to_list() == ["s:0:1#0", "s:0:2#0", "s:0:2#1", "s:0:3#0", "s:0:3#1"]
    assert res.kept["origin_line"].to_list() == [1, 2, 2, 3, 3]
    assert reasons(res) == [("missing_field", "s:0:2#2"), ("missing_field", "s:0:4")]
    assert "field 'instances[2].output'" in res.rejected["detail"][0]
    assert "field 'instances': holds no instances" in res.rejected["detail"][1]
    second = res.kept.row(2, named=True)
    assert second["instruction"] == "Is the sentiment of the review positive or negative?"
    assert second["input"] == "I'd come back just for the \"secret\" bread." and second["output"] == "positive"
    assert res.stats["ignored_fields"] == {"s": {"id": 4, "is_classification": 4, "name": 4}}


def test_plain_text_jsonl_and_txt_are_text_records():
    res = read("plain_text.jsonl")
    assert res.kept.height == 5 and res.stats["inputs"][0]["vectorized"] == 5
    assert res.kept["kind"].unique().to_list() == ["text"]
    assert res.kept.select("instruction", "input", "system").unique().rows() == [("", "", "")]
    assert res.kept["output"][2].startswith("Mark the end of a chapter with </s>")
    assert res.stats["ignored_fields"] == {"s": {"meta": 5}}
    res = read("plain_text.txt")
    lines = (PUBLIC / "plain_text.txt").read_text(encoding="utf-8").splitlines()
    assert res.kept.select("origin_line", "output").rows() == [(i + 1, t) for i, t in enumerate(lines) if t.strip()]
    assert res.kept["kind"].unique().to_list() == ["text"]


def test_plain_text_parquet_and_a_null_text(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"text": ["Ein Satz.", None, "Another line."]}).write_parquet(path)
    res = collect([InputSpec(path=str(path), source="s")], OnError.skip)
    assert res.kept["output"].to_list() == ["Ein Satz.", "Another line."]
    assert res.rejected.select("reason", "origin_line").rows() == [("missing_field", 1)]
    assert "field 'text'" in res.rejected["detail"][0]


def test_alpaca_with_a_text_column_stays_alpaca_and_reports_the_text(tmp_path):
    rows = [{"instruction": "Add 2 and 2.", "input": "", "output": "4", "text": "### Instruction: Add 2 and 2. 4"}]
    res = collect([InputSpec(path=str(write_jsonl(tmp_path / "a.jsonl", rows)), source="s")], OnError.skip)
    assert res.kept.select("instruction", "output", "kind").rows() == [("Add 2 and 2.", "4", "sft")]
    assert res.stats["ignored_fields"] == {"s": {"text": 1}}


def test_kto_labels_are_refused_unless_ignored_on_purpose():
    for on_error in (OnError.skip, OnError.fail):
        with pytest.raises(InputError) as info:
            read("kto_labels.jsonl", on_error)
        err = info.value
        assert err.field == "label" and err.line == 1 and err.file.endswith("kto_labels.jsonl")
        assert "ignore_fields" in str(err) and "KTO" in str(err)
    res = read("kto_labels.jsonl", ignore_fields=["label"])
    assert res.kept.height == 4 and res.stats["ignored_fields"] == {"s": {"label": 4}}


@pytest.mark.parametrize("field", ["chosen", "rejected", "score", "rating", "ranks", "completions", "kto_tag"])
def test_preference_and_score_fields_are_refused_on_the_fast_route_too(tmp_path, field):
    rows = [{"instruction": "Q1", "output": "A1"}, {"instruction": "Q2", "output": "A2", field: "x"}]
    with pytest.raises(InputError) as info:
        collect([InputSpec(path=str(write_jsonl(tmp_path / "p.jsonl", rows)), source="s")], OnError.skip)
    assert info.value.field == field and info.value.line == 2


def test_ignore_fields_leaves_out_a_field_the_format_could_read():
    res = read("sharegpt_tools.jsonl", ignore_fields=["tools"])
    assert res.kept["tools"].to_list() == [""] * 4
    assert res.kept["tool_turns"].list.len().to_list() == [2, 0, 4, 0]     # the calls themselves stay
    assert res.stats["ignored_fields"] == {"s": {"id": 5, "tools": 5}}


def test_a_broken_alpaca_row_with_a_text_column_is_rejected_not_trained_as_text(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('instruction,input,output,text\nAdd 2 and 2.,,4,"### Instruction: Add 2 and 2. 4"\n'
                    ',,,"### Instruction: (lost) ### Response: (lost)"\n', encoding="utf-8")
    res = collect([InputSpec(path=str(path), source="s")], OnError.skip)
    assert res.kept.select("instruction", "kind").rows() == [("Add 2 and 2.", "sft")]
    assert res.rejected.select("reason", "origin_line").rows() == [("missing_field", 3)]

"""Record formats (Alpaca, ShareGPT, OpenAI messages, mapped), conversation rules, ids and the
read = kept + rejected invariant across several inputs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataforge.config.build import InputSpec, OnError
from dataforge.data.collect import collect
from dataforge.data.record import RECORD_SCHEMA, REJECT_SCHEMA
from dataforge.errors import ConfigError, InputError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def collect_rows(tmp_path, rows, on_error=OnError.skip, **spec):
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    res = collect([InputSpec(path=str(path), source="s", **spec)], on_error)
    assert res.stats["read"]["s"] == res.kept.height + res.rejected.height
    assert dict(res.kept.schema) == RECORD_SCHEMA and dict(res.rejected.schema) == REJECT_SCHEMA
    return res


def canonical(res) -> list[dict]:
    return res.kept.select("system", "history", "instruction", "input", "output").to_dicts()


def reasons(res) -> list[tuple]:
    return [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()]


def turns(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_alpaca_history_pairs_become_turns(tmp_path):
    row = {"instruction": "And now?", "input": "", "output": "Still 4.", "system": "Be exact.",
           "history": [["What is 2+2?", "4."], ["Sure?", "Yes."]]}
    assert canonical(collect_rows(tmp_path, [row])) == [{
        "system": "Be exact.",
        "history": turns(("user", "What is 2+2?"), ("assistant", "4."), ("user", "Sure?"), ("assistant", "Yes.")),
        "instruction": "And now?", "input": "", "output": "Still 4.",
    }]


def test_sharegpt_splits_into_system_history_and_last_pair(tmp_path):
    row = {"conversations": [
        {"from": "system", "value": "You are terse."}, {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Capital of France?"},
        {"from": "gpt", "value": "Paris."}]}
    assert canonical(collect_rows(tmp_path, [row])) == [{
        "system": "You are terse.", "history": turns(("user", "Hi"), ("assistant", "Hello.")),
        "instruction": "Capital of France?", "input": "", "output": "Paris."}]


def test_openai_messages_give_the_same_record_as_sharegpt(tmp_path):
    msgs = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}]}
    share = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."},
                               {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]}
    res = collect_rows(tmp_path, [msgs, share])
    first, second = canonical(res)
    assert first == second
    assert first["history"] == turns(("user", "Hi"), ("assistant", "Hello.")) and first["output"] == "Bye."


@pytest.mark.parametrize("messages, reason, words", [
    ([{"role": "user", "content": "Hi"}], "no_assistant_reply", "it ends with a user turn"),
    ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}], "no_user_turn", "no user turn"),
    ([], "no_user_turn", "the conversation is empty"),
    ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}],
     "bad_turn_order", "ends with two assistant turns"),
    ([{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}],
     "bad_turn_order", "turn 1 is a system turn"),
    ([{"role": "robot", "content": "{}"}, {"role": "assistant", "content": "A"}], "unknown_role", "unknown role 'robot'"),
    ([{"role": "user", "content": 7}, {"role": "assistant", "content": "A"}], "wrong_type", "expected a string"),
])
def test_unusable_conversations_are_rejected_with_a_reason(tmp_path, messages, reason, words):
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    res = collect_rows(tmp_path, [good, {"messages": messages}])
    assert reasons(res) == [(reason, 2)]
    assert words in res.rejected["detail"][0]
    with pytest.raises(InputError, match=words) as info:
        collect_rows(tmp_path, [good, {"messages": messages}], OnError.fail)
    assert info.value.line == 2 and info.value.field.startswith("messages")


def test_wrong_field_inside_a_turn_is_named_with_its_index(tmp_path):
    row = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": None}]}
    res = collect_rows(tmp_path, [row])
    assert "field 'conversations[1].value': is missing or null" in res.rejected["detail"][0]


def test_mapped_columns_rename_alpaca_fields_and_messages(tmp_path):
    rows = [{"question": "2+2?", "answer": "4", "context": "math"}]
    res = collect_rows(tmp_path, rows, columns={"instruction": "question", "output": "answer", "input": "context"})
    assert canonical(res) == [{"system": "", "history": [], "instruction": "2+2?", "input": "math", "output": "4"}]
    res = collect_rows(tmp_path, [{"dialog": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}],
                       format="mapped", columns={"messages": "dialog"})
    assert canonical(res)[0]["instruction"] == "Q" and canonical(res)[0]["output"] == "A"


def test_a_missing_mapped_field_is_named_by_your_name(tmp_path):
    res = collect_rows(tmp_path, [{"question": "2+2?"}], columns={"instruction": "question", "output": "answer"})
    assert reasons(res) == [("missing_field", 1)]
    assert "field 'answer'" in res.rejected["detail"][0]


def test_auto_detects_the_format_of_each_record(tmp_path):
    rows = [{"instruction": "A?", "output": "a"},
            {"messages": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "b"}]},
            {"conversations": [{"from": "human", "value": "C?"}, {"from": "gpt", "value": "c"}]}]
    res = collect_rows(tmp_path, rows)
    assert res.kept.select("instruction", "output").rows() == [("A?", "a"), ("B?", "b"), ("C?", "c")]


def test_explicit_alpaca_format_does_not_read_conversations(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "C?"}, {"from": "gpt", "value": "c"}]}]
    res = collect_rows(tmp_path, rows, format="alpaca")
    assert reasons(res) == [("missing_field", 1)]


def test_ids_name_source_input_and_origin_and_read_equals_kept_plus_rejected(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "x"}])
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"instruction": "p", "output": "q"}, {"instruction": "r", "output": 1}, {"output": "s"}]))
    c = tmp_path / "c.csv"
    c.write_text("instruction,output\nm,n\n")
    specs = [InputSpec(path=str(a), source="web"), InputSpec(path=str(b), source="web"),
             InputSpec(path=str(c), source="domain")]
    res = collect(specs, OnError.skip)
    assert res.stats["read"] == {"web": 5, "domain": 1}
    for source, n in res.stats["read"].items():
        kept = res.kept.filter(res.kept["source"] == source).height
        rejected = res.rejected.filter(res.rejected["source"] == source).height
        assert kept + rejected == n
    assert res.kept["id"].to_list() == ["web:0:1", "web:1:0", "domain:2:2"]
    assert res.rejected["id"].to_list() == ["web:0:2", "web:1:1", "web:1:2"]
    assert [s["kept"] for s in res.stats["inputs"]] == [1, 1, 1]


def test_unknown_column_mapping_is_a_config_error_with_its_path(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])
    with pytest.raises(ConfigError) as info:
        collect([InputSpec(path=str(path), columns={"answer": "output"}),
                 InputSpec(path=str(path), format="mapped")], OnError.skip)
    assert info.value.problems == [
        "inputs[0].columns.answer: unknown field; map one of: instruction, input, output, system, history, "
        "conversations, messages, tools, instances, text (or the turn keys role, content)",
        "inputs[1].columns: format 'mapped' needs a mapping, e.g. {instruction: question, output: answer}",
    ]


def test_unused_fields_are_counted_per_input_and_per_source(tmp_path):
    fast = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "x", "output": "y", "tools": "[]", "meta": {"lang": "en"}},
        {"instruction": "p", "output": "q", "tools": "[]"},
        {"instruction": "r", "output": "s", "meta": None}])
    c = tmp_path / "b.csv"
    c.write_text("instruction,output,category\nm,n,geo\nk,l,\n")
    res = collect([InputSpec(path=str(fast), source="web"), InputSpec(path=str(c), source="web")], OnError.skip)
    assert [s["vectorized"] for s in res.stats["inputs"]] == [3, 2]
    assert [s["ignored_fields"] for s in res.stats["inputs"]] == [{"meta": 1, "tools": 2}, {"category": 1}]
    assert res.stats["ignored_fields"] == {"web": {"category": 1, "meta": 1, "tools": 2}}


def test_unused_turn_fields_are_named_inside_the_conversation(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A", "weight": 0}]}]
    res = collect_rows(tmp_path, rows)
    assert res.stats["ignored_fields"] == {"s": {"conversations[].weight": 1}}


def test_a_source_that_keeps_no_record_is_a_warning(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"instruction": "x", "output": "y"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "x", "answer": "y"}, {"question": "z", "answer": "w"}])
    res = collect([InputSpec(path=str(good), source="good"), InputSpec(path=str(bad), source="bad")], OnError.skip)
    assert res.stats["warnings"] == ["source 'bad' kept no record: all 2 read were rejected (missing_field 2); "
                                     "check its format and field names"]
    with pytest.raises(InputError, match="field 'instruction'"):
        collect([InputSpec(path=str(bad), source="bad")], OnError.fail)


def test_collect_blocks_reads_a_jsonl_file_in_blocks_as_collect_reads_it_whole(tmp_path):
    """The stream engine's block reader: same records, ids, origins, rejects and counts, whatever the
    block size, with bad lines, blank lines, a slow-route record and multi-byte text across block ends."""
    from dataforge.data.collect import collect_blocks

    lines = []
    for i in range(120):
        if i == 17:
            lines.append('{"instruction": "broken", "output": ')
        elif i == 40:
            lines.append("")
        elif i == 63:
            lines.append('{"instruction": 42, "output": "a number where text belongs"}')
        else:
            lines.append(json.dumps({"instruction": f"Frage {i}: «größer» als 河流?", "input": "",
                                     "output": "Ja. " * (i % 5 + 1)}, ensure_ascii=False))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = InputSpec(path=str(path), source="s", format="alpaca")
    whole = collect([spec], OnError.skip)
    for block_bytes in (97, 1000, 1 << 20):
        parts = list(collect_blocks(0, spec, OnError.skip, block_bytes))
        records = pl.concat([p[0] for p in parts])
        rejects = pl.concat([p[1] for p in parts])
        assert records.equals(whole.kept)
        assert rejects.equals(whole.rejected)
        assert parts[-1][2]["read"] == whole.stats["read"]["s"] == 119
        assert len(parts) > 1 or block_bytes == 1 << 20

"""LLaMA-Factory's dataset_info.json as build inputs: columns, ShareGPT tags, ranking, and the keys
that cannot be translated."""

from __future__ import annotations

import json

import pytest

from dataforge.config.build import InputSpec, OnError
from dataforge.config.from_llamafactory import translate
from dataforge.data.collect import collect
from dataforge.errors import ConfigError

# A support-desk log with its own speaker names and turn keys, as exported by a ticketing tool.
TICKETS = [
    {"dialog": [{"speaker": "setup", "text": "You answer for the Verdant Row help desk."},
                {"speaker": "customer", "text": "Pump alarm E21 again."},
                {"speaker": "agent", "text": "Is the inlet filter clogged?"},
                {"speaker": "customer", "text": "It was. Cleaned it; still \"E21\"."},
                {"speaker": "agent", "text": "Then check the impeller for grit."}]},
    {"dialog": [{"speaker": "customer", "text": "Lights stay on at night in bay 3."},
                {"speaker": "call", "text": "{\"name\": \"schedule\", \"arguments\": {\"bay\": 3}}"},
                {"speaker": "result", "text": "{\"on\": \"06:00\", \"off\": \"06:00\"}"},
                {"speaker": "agent", "text": "The schedule has the same on and off time; set off to 22:00."}]},
]


def _registry(tmp_path, entries: dict) -> object:
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TICKETS), encoding="utf-8")
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_sharegpt_tags_name_the_turn_keys_and_roles(tmp_path):
    path = _registry(tmp_path, {"tickets": {
        "file_name": "tickets.jsonl", "formatting": "sharegpt", "columns": {"messages": "dialog"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent",
                 "observation_tag": "result", "function_tag": "call", "system_tag": "setup"}}})
    inputs, settings = translate(path, ["tickets"])
    assert settings == {} and inputs[0]["source"] == "tickets" and inputs[0]["format"] == "sharegpt"
    records = collect([InputSpec(**i) for i in inputs], OnError.fail).kept.to_dicts()
    first, second = records
    assert first["system"] == "You answer for the Verdant Row help desk."
    assert [m["role"] for m in first["history"]] == ["user", "assistant"]
    assert (first["instruction"], first["output"]) == ("It was. Cleaned it; still \"E21\".", "Then check the impeller for grit.")
    assert [m["role"] for m in second["tool_turns"]] == ["assistant", "tool"]
    assert second["output"].startswith("The schedule has the same on and off time")


def test_alpaca_columns_map_to_canonical_fields(tmp_path):
    rows = [{"q": "Why is EC rising?", "ctx": "EC 2.9 after top-up", "a": "Diagnosis: evaporation.", "sys": "Be brief."}]
    (tmp_path / "qa.json").write_text(json.dumps(rows), encoding="utf-8")
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps({"qa": {"file_name": "qa.json", "columns": {
        "prompt": "q", "query": "ctx", "response": "a", "system": "sys"}}}), encoding="utf-8")
    inputs, _ = translate(path, ["qa"])
    assert inputs[0]["columns"] == {"instruction": "q", "input": "ctx", "output": "a", "system": "sys"}
    [record] = collect([InputSpec(**i) for i in inputs], OnError.fail).kept.to_dicts()
    assert (record["instruction"], record["input"], record["output"], record["system"]) == \
        ("Why is EC rising?", "EC 2.9 after top-up", "Diagnosis: evaporation.", "Be brief.")


def test_ranking_datasets_become_pairwise_preference_inputs(tmp_path):
    path = _registry(tmp_path, {"prefs": {"file_name": "tickets.jsonl", "ranking": True, "columns": {
        "prompt": "question", "chosen": "better", "rejected": "worse"}}})
    inputs, settings = translate(path, ["prefs"])
    assert settings == {"task": "preference"}
    assert inputs[0]["format"] == "pairwise"
    assert inputs[0]["columns"] == {"instruction": "question", "chosen": "better", "rejected": "worse"}


def test_unknown_and_unsupported_keys_are_named(tmp_path):
    path = _registry(tmp_path, {"pics": {"file_name": "tickets.jsonl", "num_samples": 100, "shuffle": True,
                                         "columns": {"prompt": "q", "images": "imgs", "chosen": "c"},
                                         "tags": {"role_tag": "speaker"}}})
    with pytest.raises(ConfigError) as err:
        translate(path, ["pics"])
    text = str(err.value)
    for needle in ("pics.shuffle: unknown key", "pics.num_samples: not supported", "pics.columns.images: not supported",
                   "pics.columns.chosen: not a alpaca column (chosen/rejected need ranking: true)",
                   "pics.tags: tags apply to formatting sharegpt only"):
        assert needle in text
    with pytest.raises(ConfigError, match=r"--dataset: nope not in .*available: pics"):
        translate(path, ["nope"])

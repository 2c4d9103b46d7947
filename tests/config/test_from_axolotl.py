"""An axolotl `datasets:` block as build inputs and settings, and the keys it cannot translate."""

from __future__ import annotations

import json

import pytest
import yaml

from dataforge.config.build import InputSpec, OnError
from dataforge.config.from_axolotl import translate
from dataforge.data.collect import collect
from dataforge.errors import ConfigError

CHATS = [{"thread": [{"who": "customer", "said": "EC reads 3.1 on basil."},
                     {"who": "bot", "said": "That is high; dilute with plain water."},
                     {"who": "customer", "said": "By how much?"},
                     {"who": "model", "said": "About 10 % of the reservoir volume, then recheck."}],
          "preamble": "Answer like a grower."}]


def _config(tmp_path, data: dict):
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS), encoding="utf-8")
    path = tmp_path / "axolotl.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_chat_template_entry_maps_fields_roles_and_data_settings(tmp_path):
    path = _config(tmp_path, {
        "base_model": "some/model", "sequence_len": 1024, "train_on_inputs": False, "val_set_size": 0.05,
        "micro_batch_size": 2,
        "datasets": [{"path": "chats.jsonl", "type": "chat_template", "field_messages": "thread",
                      "field_system": "preamble", "message_property_mappings": {"role": "who", "content": "said"},
                      "roles": {"user": ["customer"], "assistant": ["bot", "model"]},
                      "roles_to_train": ["assistant"], "train_on_eos": "turn"}]})
    inputs, settings, notes = translate(path)
    assert settings == {"tokenize.max_length": 1024, "tokenize.train_on_inputs": False, "split.val": 0.05,
                        "tokenize.train_turns": "all"}
    assert notes == ["not part of a build, left to `dataforge train`: base_model, micro_batch_size"]
    assert inputs[0]["columns"] == {"messages": "thread", "role": "who", "content": "said", "system": "preamble"}
    [record] = collect([InputSpec(**i) for i in inputs], OnError.fail).kept.to_dicts()
    assert record["system"] == "Answer like a grower."
    assert record["history"] == [{"role": "user", "content": "EC reads 3.1 on basil."},
                                 {"role": "assistant", "content": "That is high; dilute with plain water."}]
    assert record["output"] == "About 10 % of the reservoir volume, then recheck."


def test_untranslatable_entries_are_named(tmp_path):
    path = _config(tmp_path, {"test_datasets": [], "datasets": [
        {"path": "chats.jsonl", "type": "chat_template", "roles_to_train": ["user", "assistant"], "train_on_eos": "last",
         "field_thinking": "reasoning", "chat_template": "chatml"},
        {"path": "a.jsonl", "type": {"field_instruction": "q", "field_output": "a"}},
        {"path": "b.jsonl", "type": "sharegpt:chat"}]})
    with pytest.raises(ConfigError) as err:
        translate(path)
    text = str(err.value)
    for needle in ("test_datasets: not supported",
                   "datasets[0].field_thinking: unknown key for type chat_template",
                   "datasets[0].chat_template: not supported",
                   "datasets[0].roles_to_train: ['user', 'assistant'] is not supported",
                   "datasets[0].train_on_eos: 'last' is not supported",
                   "datasets[1].type: a custom prompt format (field_instruction, field_output) is not translated",
                   "datasets[2].type: 'sharegpt:chat' is not translated"):
        assert needle in text

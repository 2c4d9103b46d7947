"""Preference run folders: the contract training checks, and the layout of a pair batch."""

from __future__ import annotations

import json

import datasets
import pytest

from dataforge.errors import InputError
from dataforge.train.pref_data import kto_batch_from_rows, load_preference_run, pair_batch_from_rows
from tests.train.pref_rows import demo_pairs, make_preference_run


def test_an_sft_build_is_refused_for_dpo_naming_the_manifest_field(build_run):
    with pytest.raises(InputError) as err:
        load_preference_run(build_run, "dpo")
    assert "task: preference" in str(err.value) and "manifest.json" in str(err.value)


def test_a_missing_pair_column_is_named(tmp_path, tiny_model_ready):
    run = make_preference_run(tmp_path, demo_pairs(10))
    dd = datasets.load_from_disk(str(run / "tokenized"))
    broken = datasets.DatasetDict({k: v.remove_columns("rejected_labels") for k, v in dd.items()})
    broken.save_to_disk(str(tmp_path / "broken" / "tokenized"))
    (tmp_path / "broken" / "manifest.json").write_text((run / "manifest.json").read_text())
    with pytest.raises(InputError, match="rejected_labels") as err:
        load_preference_run(tmp_path / "broken", "dpo")
    assert "split 'train'" in str(err.value)
    with pytest.raises(InputError, match="kto_label"):
        load_preference_run(run, "kto")


def test_a_pair_batch_stacks_chosen_over_rejected_and_masks_the_prompt():
    rows = [{"chosen_input_ids": [1, 5, 6, 7], "chosen_labels": [-100, -100, 6, 7],
             "rejected_input_ids": [1, 5, 9], "rejected_labels": [-100, -100, 9], "source": "a"},
            {"chosen_input_ids": [1, 8, 4], "chosen_labels": [-100, 8, 4],
             "rejected_input_ids": [1, 8, 3, 3, 3], "rejected_labels": [-100, 8, 3, 3, 3], "source": "b"}]
    pb = pair_batch_from_rows(rows, 0, None)
    assert pb.pairs == 2 and pb.sources == ["a", "b"]
    ids = pb.batch.inputs["input_ids"].tolist()
    assert ids == [[1, 5, 6, 7, 0], [1, 8, 4, 0, 0], [1, 5, 9, 0, 0], [1, 8, 3, 3, 3]]
    # shift: the label of position t is the token at t + 1, -100 on prompt targets and padding
    assert pb.batch.shift_labels.tolist()[0] == [-100, 6, 7, -100, -100]
    assert pb.batch.shift_labels.tolist()[3] == [8, 3, 3, 3, -100]
    assert pb.batch.inputs["attention_mask"].tolist()[2] == [1, 1, 1, 0, 0]


def test_kto_kl_rows_pair_each_prompt_with_the_next_completion():
    rows = [{"input_ids": [1, 5, 6], "labels": [-100, -100, 6], "kto_label": True, "source": "a"},
            {"input_ids": [1, 8, 9, 4, 4], "labels": [-100, 8, 9, 4, 4], "kto_label": False, "source": "a"}]
    kb = kto_batch_from_rows(rows, 0, None)
    assert kb.desirable.tolist() == [True, False]
    kl_ids = kb.kl_batch.inputs["input_ids"].tolist()
    assert kl_ids[0][:6] == [1, 5, 8, 9, 4, 4] and kl_ids[1][:3] == [1, 6, 0]
    assert json.dumps(kb.kl_batch.shift_labels.tolist()[1]) == json.dumps([6, -100, -100, -100, -100, -100])

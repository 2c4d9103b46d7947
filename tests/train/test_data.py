"""Batches from a build run folder: packed rows train exactly like the records they hold."""

from __future__ import annotations

import datasets
import pytest
import torch

from dataforge.errors import InputError
from dataforge.models import resolve_model
from dataforge.train.data import check_vocabulary, load_build_run, make_batch, sequence_lengths
from dataforge.train.loss import batch_nll


@pytest.fixture(scope="module")
def model():
    """As loaded for inference: `use_cache` is on in its config."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).eval()
    assert model.config.use_cache
    return model


def test_a_packed_batch_scores_like_its_records_one_by_one(model, build_run):
    """No attention across records and no target across a record boundary."""
    from dataforge.data.pack import pack_best_fit

    val = datasets.load_from_disk(str(build_run / "tokenized"))["val"].select(range(8))
    packed = datasets.Dataset(pack_best_fit(val, 256).table)
    assert packed.num_rows < val.num_rows  # several records share a row
    batch = make_batch(packed, range(packed.num_rows), 0, None, packed=True)
    assert "attention_mask" not in batch.inputs
    with torch.no_grad():
        packed_nll = batch_nll(model, batch, "cpu").sum().item()
        one_by_one, trained = 0.0, 0
        for row in val:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            n = int((labels[0, 1:] != -100).sum())
            one_by_one += model(input_ids=ids, labels=labels).loss.item() * n
            trained += n
    assert batch.trained_tokens == trained
    assert packed_nll == pytest.approx(one_by_one, rel=1e-4)


def test_batch_counts_match_the_records(build_run):
    train = datasets.load_from_disk(str(build_run / "tokenized"))["train"]
    idx = [0, 5, 9]
    batch = make_batch(train, idx, 0, 8, packed=False)
    lengths = [len(train[i]["input_ids"]) for i in idx]
    width = -(-max(lengths) // 8) * 8
    assert batch.inputs["input_ids"].shape == (3, width)
    assert batch.tokens == sum(lengths) == int(batch.inputs["attention_mask"].sum())
    assert batch.positions == 3 * width
    assert batch.trained_tokens == sum(sum(x != -100 for x in train[i]["labels"][1:]) for i in idx)
    assert batch.sources == [train[i]["source"] for i in idx]


def test_data_tokenized_for_a_smaller_vocabulary_is_refused(build_run):
    from dataforge.models import load_tokenizer

    data = load_build_run(build_run)
    with pytest.raises(InputError, match="outside the model's 100-row embedding"):
        check_vocabulary(data, "tiny", load_tokenizer("tiny"), embedding_rows=100)


def test_a_folder_that_is_not_a_build_is_refused(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        load_build_run(tmp_path)


def test_sequence_lengths_follow_the_rows_a_selection_shows(build_run):

    train = datasets.load_from_disk(str(build_run / "tokenized"))["train"]
    picked = train.select([7, 2, train.num_rows - 1])
    assert sequence_lengths(picked).tolist() == [len(x) for x in picked["input_ids"]]

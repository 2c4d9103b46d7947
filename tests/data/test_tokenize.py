"""Tokenizing: loss masks, EOS, over-length strategies and padding, checked against direct tokenizer calls."""

from __future__ import annotations

import statistics

import numpy as np
import polars as pl
import pytest
import torch

from dataforge.config.build import TokenizeConfig
from dataforge.data.encode import encode_flat
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.templates import apply_template, load_template
from dataforge.data.tokenize import IGNORE_INDEX, collate, length_stats, tokenize_records
from dataforge.data.truncate import MIN_PROMPT_TOKENS
from dataforge.errors import InputError
from dataforge.models import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def rendered(rows: list[dict], template: str = "alpaca", tokenizer=None) -> pl.DataFrame:
    full = [{"id": f"s:0:{i + 1}", "source": "s", "origin_file": "d.jsonl", "origin_line": i + 1, "system": "",
             "history": [], "input": "", **r} for i, r in enumerate(rows)]
    records = pl.DataFrame(full, schema=RECORD_SCHEMA)
    return apply_template(records, load_template(template), seed=0, variants=False, tokenizer=tokenizer)


def enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


SHORT = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "output": "Blue, like the sky — or «bleu» in French."},
    {"instruction": "Write code.", "output": "def f(x):\n    return x * 2\n"},
]
LONG_INPUT = {"instruction": "Summarize the text.", "input": " ".join(f"word{i}" for i in range(300)), "output": "A list of words."}
LONG_OUTPUT = {"instruction": "Count.", "output": " ".join(str(i) for i in range(300))}


def test_labels_mask_bos_and_prompt_and_train_response_and_eos(tok):
    frame = rendered(SHORT)
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=512))
    for row, ids, labels in zip(frame.iter_rows(named=True), res.table["input_ids"].to_pylist(),
                                res.table["labels"].to_pylist(), strict=True):
        p, r = enc(tok, row["prompt"]), enc(tok, row["response"])
        assert ids == [tok.bos_token_id, *p, *r, tok.eos_token_id]
        assert labels == [IGNORE_INDEX] * (1 + len(p)) + [*r, tok.eos_token_id]
    assert res.table["attention_mask"].to_pylist() == [[1] * len(x) for x in res.table["input_ids"].to_pylist()]
    assert res.table["id"].to_pylist() == frame["id"].to_list()
    assert res.table["source"].to_pylist() == ["s"] * 3
    assert res.counts == {"dropped": 0, "truncated": 0, "prompt_truncated_away": 0, "by_source": {}}


def test_train_on_inputs_trains_everything_after_the_first_token(tok):
    res = tokenize_records(rendered(SHORT), tok, TokenizeConfig(max_length=512, train_on_inputs=True))
    for ids, labels in zip(res.table["input_ids"].to_pylist(), res.table["labels"].to_pylist(), strict=True):
        assert labels == [IGNORE_INDEX, *ids[1:]]


def test_chat_template_bos_and_eos_are_not_doubled(tok):
    rows = [{**SHORT[0], "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    frame = rendered(rows, "chat", tok)
    ids = tokenize_records(frame, tok, TokenizeConfig(max_length=512)).table["input_ids"].to_pylist()[0]
    labels = tokenize_records(frame, tok, TokenizeConfig(max_length=512)).table["labels"].to_pylist()[0]
    # The chat template writes <s> itself and ends each assistant turn with </s>.
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids.count(tok.eos_token_id) == 2 and ids[-1] == tok.eos_token_id
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert trained == [*enc(tok, "5"), tok.eos_token_id]


def through_instruction(tok, prompt: str, instruction: str) -> int:
    """Prompt tokens up to the end of the instruction's last occurrence in it."""
    return len(enc(tok, prompt[:prompt.rfind(instruction) + len(instruction)]))


def expected_truncation(p: list[int], r: list[int], max_length: int, bos: int, eos: int, protected: int) -> list[int]:
    """The documented rule, written out plainly: the prompt's middle after the instruction goes first,
    then the response's end."""
    available = max_length - 2
    need = min(len(p), max(MIN_PROMPT_TOKENS, protected + MIN_PROMPT_TOKENS // 2))
    keep_p = min(len(p), max(need, available - len(r)))
    head = max(protected, keep_p - keep_p // 2) if keep_p < len(p) else keep_p
    tail = keep_p - head
    return [bos, *p[:head], *(p[len(p) - tail:] if tail else []), *r[:available - keep_p], eos]


def test_truncation_is_exactly_max_length_and_keeps_a_trained_eos(tok):
    frame = rendered([LONG_INPUT, LONG_OUTPUT, SHORT[0]])
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=96, overlength="truncate"))
    assert res.counts == {"dropped": 0, "truncated": 2, "prompt_truncated_away": 0,
                          "by_source": {"s": {"truncated": 2, "dropped": 0, "prompt_truncated_away": 0}}}
    ids, labels = res.table["input_ids"].to_pylist(), res.table["labels"].to_pylist()
    for i, row in enumerate(frame.head(2).iter_rows(named=True)):
        p, r = enc(tok, row["prompt"]), enc(tok, row["response"])
        protected = through_instruction(tok, row["prompt"], row["instruction"])
        assert len(ids[i]) == 96
        assert ids[i] == expected_truncation(p, r, 96, tok.bos_token_id, tok.eos_token_id, protected)
        assert ids[i][-1] == labels[i][-1] == tok.eos_token_id
    # Long input: the prompt was cut, the response kept whole and trained.
    r0 = enc(tok, "A list of words.")
    assert [t for t, lab in zip(ids[0], labels[0], strict=True) if lab != IGNORE_INDEX] == [*r0, tok.eos_token_id]
    assert tok.decode(ids[0][:-1]).endswith("### Response:\nA list of words.")
    # Long output: the prompt keeps its instruction and answer cue, the response keeps its start.
    assert "### Instruction:\nCount.\n" in tok.decode(ids[1]) and "### Response:\n0 1 2" in tok.decode(ids[1])
    r1 = enc(tok, frame["response"][1])
    trained1 = [t for t, lab in zip(ids[1], labels[1], strict=True) if lab != IGNORE_INDEX]
    assert trained1 == [*r1[:len(trained1) - 1], tok.eos_token_id]
    assert len(ids[2]) < 96


def test_drop_rejects_over_length_records_with_token_counts(tok):
    frame = rendered([SHORT[0], LONG_INPUT, SHORT[1], LONG_OUTPUT])
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=96, overlength="drop"))
    totals = [2 + len(enc(tok, p)) + len(enc(tok, r)) for p, r in zip(frame["prompt"], frame["response"], strict=True)]
    too_long = [i for i, t in enumerate(totals) if t > 96]
    assert too_long == [1, 3]
    assert res.counts == {"dropped": 2, "truncated": 0, "prompt_truncated_away": 0,
                          "by_source": {"s": {"truncated": 0, "dropped": 2, "prompt_truncated_away": 0}}}
    assert res.table["id"].to_pylist() == ["s:0:1", "s:0:3"]
    rej = res.rejected
    assert rej["stage"].to_list() == ["tokenize"] * 2 and rej["reason"].to_list() == ["too_long"] * 2
    assert rej["id"].to_list() == ["s:0:2", "s:0:4"] and rej["origin_line"].to_list() == [2, 4]
    assert rej["detail"][0].startswith(f"{totals[1]} tokens > max_length 96")


def test_error_mode_names_the_record_and_its_length(tok):
    frame = rendered([SHORT[0], LONG_INPUT])
    with pytest.raises(InputError) as exc:
        tokenize_records(frame, tok, TokenizeConfig(max_length=96, overlength="error"))
    total = 2 + len(enc(tok, frame["prompt"][1])) + len(enc(tok, frame["response"][1]))
    assert exc.value.file == "d.jsonl" and exc.value.line == 2
    assert "s:0:2" in str(exc.value) and f"{total} tokens > max_length 96" in str(exc.value)


def test_batch_encoding_matches_the_tokenizer_call(tok):
    texts = ["", "plain words", "ünïcödé — 日本語 🙂", "<s> inside </s> text", "  spaces\n\n\ttabs  ", "x" * 500]
    values, lengths = encode_flat(tok, texts)
    direct = tok(texts, add_special_tokens=False)["input_ids"]
    assert lengths.tolist() == [len(d) for d in direct]
    assert values.tolist() == [t for d in direct for t in d]


def test_empty_frame_gives_an_empty_table(tok):
    res = tokenize_records(rendered(SHORT).head(0), tok, TokenizeConfig())
    assert res.table.num_rows == 0 and res.table.column_names == ["input_ids", "attention_mask", "labels", "source", "id"]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_to_a_multiple_with_masked_labels(side):
    feats = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7], "source": "a"},
             {"input_ids": list(range(10, 19)), "attention_mask": [1] * 9, "labels": list(range(10, 19)), "source": "b"}]
    batch = collate(feats, 0, padding_side=side, pad_to_multiple_of=8)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"].dtype == torch.long
    pad = [0] * 13
    row0 = [5, 6, 7] + pad if side == "right" else pad + [5, 6, 7]
    assert batch["input_ids"][0].tolist() == row0
    assert batch["attention_mask"][0].tolist() == [int(x != 0) for x in row0]
    lab0 = [-100, 6, 7] + [-100] * 13 if side == "right" else [-100] * 13 + [-100, 6, 7]
    assert batch["labels"][0].tolist() == lab0
    assert batch["attention_mask"][1].sum().item() == 9


def test_collate_of_packed_rows_keeps_positions_and_drops_the_attention_mask(tok):
    feats = [{"input_ids": [1, 2, 3, 4], "attention_mask": [1] * 4, "labels": [-100, 2, -100, 4], "position_ids": [0, 1, 0, 1]},
             {"input_ids": [9, 9], "attention_mask": [1, 1], "labels": [-100, 9], "position_ids": [0, 1]}]
    batch = collate(feats, tok)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 0]]
    assert batch["input_ids"][1].tolist() == [9, 9, tok.pad_token_id, tok.pad_token_id]


def test_length_stats_match_the_statistics_module():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 900, size=501).tolist()
    stats = length_stats(lengths)
    q = statistics.quantiles(lengths, n=100, method="inclusive")
    assert stats["p50"] == pytest.approx(statistics.median(lengths)) and stats["p95"] == pytest.approx(q[94])
    assert (stats["min"], stats["max"], stats["n"]) == (min(lengths), max(lengths), 501)
    assert stats["mean"] == pytest.approx(statistics.fmean(lengths))
    assert length_stats([])["n"] == 0


# ---------------------------------------------------------------- record text stays text

SPECIAL_TEXT = [
    {"instruction": "Explain what <s> and </s> mean in a tokenizer.", "input": "Also <pad>.",
     "output": "<s> opens a text and </s> closes it; <pad> fills a batch. Write them as text: </s>"},
    {"instruction": "Plain question.", "output": "Plain answer."},
]


def split_enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_special_token_text_in_a_record_is_encoded_as_text(tok):
    frame = rendered(SPECIAL_TEXT)
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=512), template=load_template("alpaca"))
    ids = res.table["input_ids"].to_pylist()
    labels = res.table["labels"].to_pylist()
    for row, seq, lab in zip(frame.iter_rows(named=True), ids, labels, strict=True):
        p, r = split_enc(tok, row["prompt"]), split_enc(tok, row["response"])
        assert seq == [tok.bos_token_id, *p, *r, tok.eos_token_id]
        assert lab == [IGNORE_INDEX] * (1 + len(p)) + [*r, tok.eos_token_id]
    # One bos, one eos, no pad: the record's "<s>", "</s>" and "<pad>" are characters.
    assert [ids[0].count(t) for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)] == [1, 1, 0]
    assert tok.decode(ids[0][1:-1]) == frame["prompt"][0] + frame["response"][0]
    assert res.routes["around_markers"] == 2


def test_chat_template_markers_stay_ids_beside_special_token_text(tok):
    rows = [{"instruction": "Say </s> twice", "output": "Done: </s> </s>",
             "history": [{"role": "user", "content": "Hi <s>"}, {"role": "assistant", "content": "Hello </s> there"}]}]
    frame = rendered(rows, "chat", tok)
    prompt, response = frame["prompt"][0], frame["response"][0]
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=512), template=load_template("chat"))
    ids, labels = res.table["input_ids"][0].as_py(), res.table["labels"][0].as_py()
    # The tiny chat template writes <s> first and </s> after each assistant turn; all else is text.
    assert prompt.startswith("<s>") and response.endswith("</s>\n\n")
    turn_end = prompt.index("there</s>") + len("there")
    expected_prompt = [tok.bos_token_id, *split_enc(tok, prompt[3:turn_end]), tok.eos_token_id,
                       *split_enc(tok, prompt[turn_end + 4:])]
    expected_response = [*split_enc(tok, response[:-len("</s>\n\n")]), tok.eos_token_id]
    assert ids == expected_prompt + expected_response
    assert labels == [IGNORE_INDEX] * len(expected_prompt) + expected_response
    assert ids.count(tok.eos_token_id) == 2 and ids.count(tok.bos_token_id) == 1


def test_special_token_text_without_the_template_is_refused(tok):
    with pytest.raises(ValueError, match="s:0:1 holds a special token's text"):
        tokenize_records(rendered(SPECIAL_TEXT), tok, TokenizeConfig(max_length=512))


# ---------------------------------------------------------------- truncation keeps meaning

# Long multilingual text written for these tests: Japanese, emoji, Hindi, Arabic.
MULTILINGUAL = ("今日は雨が降っているので、図書館で古い地図を調べました。🌧️📚🗺️🙂👍🏽 "
                "आज बारिश हो रही है, इसलिए मैंने पुस्तकालय में पुराने नक्शे देखे। "
                "اليوم تمطر، لذلك قرأت الخرائط القديمة في المكتبة. ")


def kept_parts(tok, ids: list[int], labels: list[int]) -> tuple[str, str]:
    """(prompt, response) text of a sequence: untrained tokens after the bos, trained ones before the eos."""
    trained_from = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    return tok.decode(ids[1:trained_from]), tok.decode(ids[trained_from:-1])


def test_a_cut_prompt_keeps_its_whole_instruction(tok):
    instruction = "Translate every sentence of the input into English, keeping the order. " + MULTILINGUAL[:20]
    rows = [{"instruction": instruction, "input": MULTILINGUAL * 2, "output": MULTILINGUAL * 2}]
    frame = rendered(rows)
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=384))
    assert res.counts["truncated"] == 1
    prompt, response = kept_parts(tok, res.table["input_ids"][0].as_py(), res.table["labels"][0].as_py())
    assert f"### Instruction:\n{instruction}\n" in prompt   # whole; the cut took the input
    assert prompt.endswith("\n### Response:\n")
    assert len(res.table["input_ids"][0]) <= 384 and frame["response"][0].startswith(response)


def test_keep_instruction_tokens_keeps_that_head_of_a_long_instruction(tok):
    instruction = "Follow these rules. " + MULTILINGUAL * 3
    frame = rendered([{"instruction": instruction, "output": MULTILINGUAL * 4}])
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=128, keep_instruction_tokens=20))
    assert res.counts["truncated"] == 1 and res.rejected.height == 0
    prompt, _ = kept_parts(tok, res.table["input_ids"][0].as_py(), res.table["labels"][0].as_py())
    head = frame["prompt"][0][:frame["prompt"][0].index(instruction)]
    # Everything up to the instruction, then at least its first 20 tokens (one fewer if a character
    # had to be kept whole), then the cut.
    first_tokens = enc(tok, head + instruction)[len(enc(tok, head)):][:19]
    assert prompt.startswith(head + tok.decode(first_tokens).rstrip("\ufffd"))
    assert prompt.endswith("### Response:\n")


def test_a_record_that_would_lose_its_instruction_is_dropped_and_counted(tok):
    long_instruction = "Follow these rules. " + MULTILINGUAL * 3
    frame = rendered([SHORT[0], {"instruction": long_instruction, "output": MULTILINGUAL * 4}])
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=128))
    assert res.table["id"].to_pylist() == ["s:0:1"]
    assert res.rejected["reason"].to_list() == ["prompt_truncated_away"] and res.rejected["id"].to_list() == ["s:0:2"]
    assert "keeping the whole instruction takes" in res.rejected["detail"][0]
    assert res.counts["by_source"] == {"s": {"truncated": 0, "dropped": 0, "prompt_truncated_away": 1}}


def test_a_cut_never_splits_a_character(tok):
    rows = [{"instruction": "Retell this.", "input": MULTILINGUAL * 5, "output": MULTILINGUAL[k:] * 5} for k in range(0, 40, 3)]
    frame = rendered(rows, "plain")
    split = 0
    for max_length in range(72, 112, 3):
        res = tokenize_records(frame, tok, TokenizeConfig(max_length=max_length))
        assert res.counts["truncated"] == len(rows)
        for row, ids, labels in zip(frame.iter_rows(named=True), res.table["input_ids"].to_pylist(),
                                    res.table["labels"].to_pylist(), strict=True):
            prompt, response = kept_parts(tok, ids, labels)
            split += "\ufffd" in prompt + response
            assert row["response"].startswith(response) and prompt.startswith("Retell this.\n\n")
            assert max_length - 9 <= len(ids) <= max_length and ids[-1] == tok.eos_token_id
    assert split == 0

"""Corpus perplexity scored as lm-eval's loglikelihood_rolling: same windows, same numbers."""

from __future__ import annotations

import math
import re

import pytest
import torch

from dataforge.errors import InputError
from dataforge.eval.aggregate import aggregate
from dataforge.eval.lm import HFLanguageModel, rolling_windows
from dataforge.eval.perplexity import count_bytes, count_words, read_corpus, score_corpus, split_text
from dataforge.eval.tasks import Document, load_task
from dataforge.models import load_causal_lm, load_tokenizer
from dataforge.paths import ASSETS_DIR


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny"), load_tokenizer("tiny")


def test_windows_are_disjoint_cover_every_token_and_match_lm_eval():
    tokens = list(range(10, 33))                    # 23 tokens, windows of 8
    windows = rolling_windows(tokens, prefix_token=1, max_len=8)
    assert [w[1] for w in windows] == [tokens[0:8], tokens[8:16], tokens[16:23]]
    assert windows[0][0] == [1] and windows[1][0] == [tokens[7]]
    assert windows[2][0] == tokens[14:16]          # the partial last window sees as much as fits
    for ctx, pred in windows:
        assert len(ctx) + len(pred) - 1 <= 8
    lm_eval_utils = pytest.importorskip("lm_eval.utils")
    for n, max_len in ((23, 8), (1, 8), (8, 8), (9, 8), (100, 7)):
        toks = list(range(10, 10 + n))
        want = [lm_eval_utils.make_disjoint_window(w) for w in
                lm_eval_utils.get_rolling_token_windows(token_list=toks, prefix_token=1, max_seq_len=max_len, context_len=1)]
        assert rolling_windows(toks, 1, max_len) == [(list(a), list(b)) for a, b in want]


def test_rolling_loglikelihood_equals_one_plain_forward_per_window(tiny):
    model, tok = tiny
    text = (ASSETS_DIR / "corpus" / "general_heldout.txt").read_text(encoding="utf-8")[:3000]
    lm = HFLanguageModel(model, tok, name="tiny", fingerprint="t", batch_size=4, max_length=128)
    (score,) = lm.loglikelihood_rolling([text])
    ids = tok(text)["input_ids"]
    total = 0.0
    for ctx, pred in rolling_windows(ids, tok.bos_token_id, 128):
        inp = ctx + pred[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].double(), -1)
        total += float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(pred)))
    assert score.n_tokens == len(ids) > 3 * 128
    assert score.ll == pytest.approx(total, abs=1e-3)


def test_perplexity_equals_lm_eval_on_the_same_model_and_text(tiny):
    lm_eval_hf = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    model, tok = tiny
    corpus = (ASSETS_DIR / "corpus" / "general_heldout.txt").read_text(encoding="utf-8")
    docs = [corpus[:2500], "One short line.", corpus[5000:5600], "Ünïcödé text — with ‘quotes’."]
    theirs = lm_eval_hf.HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=256)
    want = theirs.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)], disable_tqdm=True)
    ours = HFLanguageModel(model, tok, name="tiny", fingerprint="t", batch_size=4, max_length=256)
    rows = [{"ll": s.ll, "n_tokens": s.n_tokens, "n_words": count_words(d), "n_bytes": count_bytes(d), "metrics": {}}
            for d, s in zip(docs, ours.loglikelihood_rolling(docs), strict=True)]
    assert [r["ll"] for r in rows] == pytest.approx(want, abs=1e-3)
    metrics = aggregate("perplexity", rows)
    ll, words, n_bytes = sum(want), sum(len(re.split(r"\s+", d)) for d in docs), sum(len(d.encode()) for d in docs)
    assert metrics["word_perplexity"] == pytest.approx(math.exp(-ll / words), rel=1e-6)
    assert metrics["byte_perplexity"] == pytest.approx(math.exp(-ll / n_bytes), rel=1e-6)
    assert metrics["bits_per_byte"] == pytest.approx(-ll / n_bytes / math.log(2), rel=1e-6)


def test_words_and_bytes_are_counted_as_lm_eval_counts_them():
    assert count_words("  two  words ") == 4          # re.split keeps the empty ends, as lm-eval does
    assert count_words("a\nb\tc") == 3
    assert count_bytes("né") == 3


def test_paragraphs_keep_the_line_they_start_on():
    text = "first para\nstill first\n\n\nsecond\n  \nthird\n"
    assert split_text(text, Document.paragraph) == [("first para\nstill first", 1), ("second", 5), ("third", 7)]
    assert split_text(text, Document.line)[1] == ("still first", 2)
    assert split_text("  \n\n", Document.file) == []


def test_an_empty_corpus_is_an_input_error_naming_the_file(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n   \n")
    (tmp_path / "t.yaml").write_text("name: t\ntype: perplexity\ndata: {path: c.txt}\n")
    with pytest.raises(InputError, match=r"c.txt: empty corpus"):
        read_corpus(load_task(tmp_path / "t.yaml"))


def test_a_record_without_the_text_field_names_its_line(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    (tmp_path / "t.yaml").write_text("name: t\ntype: perplexity\ndata: {path: c.jsonl}\n")
    with pytest.raises(InputError, match=r"c.jsonl:2: field 'text': missing field"):
        read_corpus(load_task(tmp_path / "t.yaml"))


def test_corpus_rows_carry_the_sums_the_aggregate_needs(tiny, tmp_path):
    model, tok = tiny
    (tmp_path / "c.txt").write_text("The cat sat on the mat.\n\nA second, longer paragraph of text follows here.\n")
    (tmp_path / "t.yaml").write_text("name: t\ntype: perplexity\ndata: {path: c.txt}\n")
    docs = read_corpus(load_task(tmp_path / "t.yaml"))
    rows = score_corpus(HFLanguageModel(model, tok, name="tiny", fingerprint="t"), docs)
    assert [r["origin"].rsplit(":", 1)[1] for r in rows] == ["1", "3"]
    tokens = sum(len(tok(d.text)["input_ids"]) for d in docs)
    assert sum(r["n_tokens"] for r in rows) == tokens
    value = aggregate("perplexity", rows)["perplexity"]
    assert value == pytest.approx(math.exp(-sum(r["ll"] for r in rows) / tokens))

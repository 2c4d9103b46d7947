"""The piecewise fast path gives exactly the tokenizer's ids, on text built to hit every boundary case."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dataforge.config.build import TokenizeConfig
from dataforge.data.encode import SPLIT_COARSE, coarse_pattern, encode_flat, encode_pieces
from dataforge.data.markers import encode_marked
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.templates import apply_template, load_template
from dataforge.data.tokenize import IGNORE_INDEX, tokenize_records
from dataforge.models import load_tokenizer

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Fragments whose joins produce whitespace runs of every kind before letters, digits, punctuation and
# contractions, runs at the end of a text, and contraction look-alikes.
FRAGMENTS = ["the", "Word", "x", "42", "7", "12345", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'", "''",
             "'S", ".", "...", "!?", "(", ")", "#", "###", "-", "_", "$", "@", " ", "  ", "   ", "\t", "\n",
             "\n\n", "\r\n", "\r", " \n", "\n ", " \t ", "\t\n", "\t(", "1234567", "'LL", "Ab"]


def adversarial_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "  ", "\n", "word", "  word", "\n\n###", "a  'sun", "a\n'sun", "a \n 'll x", "end  "]
    while len(texts) < n:
        texts.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30))))
    return texts


# Llama-3 and Qwen2 special tokens, so text that spells them can be tested on those pre-tokenizers.
EXTRA_SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def trained(pre_tokenizer, normalizer=None) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the adversarial text, so runs like '\\n\\n', '   ' and " '" are tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>", *EXTRA_SPECIALS], show_progress=False)
    tok.train_from_iterator(adversarial_texts(3000, seed=1), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def split_byte_level(pattern: str):
    """Llama-3 / Qwen2 style: the pattern as a Split, then byte-level without its own regex."""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@pytest.fixture(scope="module")
def whitespace_rich_tokenizer() -> PreTrainedTokenizerFast:
    return trained(pre_tokenizers.ByteLevel(add_prefix_space=False))


def reference(tok, texts: list[str]) -> tuple[list[int], list[int]]:
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return [t for row in ids for t in row], [len(row) for row in ids]


TOKENIZERS = {
    "tiny": lambda: load_tokenizer("tiny"),
    "gpt2_style": lambda: trained(pre_tokenizers.ByteLevel(add_prefix_space=False)),
    **{f"split_{i}": (lambda p=p: trained(split_byte_level(p))) for i, p in enumerate(SPLIT_COARSE)},
    "split_0_nfc": lambda: trained(split_byte_level(next(iter(SPLIT_COARSE))), normalizers.NFC()),
}


@pytest.mark.parametrize("which", list(TOKENIZERS))
def test_piecewise_encoding_equals_the_tokenizer(which):
    tok = TOKENIZERS[which]()
    pattern = coarse_pattern(tok.backend_tokenizer)
    assert pattern is not None
    texts = adversarial_texts(4000, seed=2)
    values, lengths = encode_pieces(tok.backend_tokenizer, pattern, pl.Series(texts))
    ref_values, ref_lengths = reference(tok, texts)
    assert lengths.tolist() == ref_lengths
    assert values.tolist() == ref_values


@pytest.mark.parametrize("which", ["gpt2_style", "split_0"])
def test_a_plain_split_without_the_coarsening_would_be_wrong(which):
    """The look-ahead matters: splitting whitespace runs greedily changes the ids."""
    tok = TOKENIZERS[which]()
    own = GPT2_PATTERN if which == "gpt2_style" else next(iter(SPLIT_COARSE))
    naive = own.replace(r"|\s+(?!\S)|\s+", r"|\s+")
    assert naive != own
    texts = adversarial_texts(500, seed=3)
    values, lengths = encode_pieces(tok.backend_tokenizer, naive, pl.Series(texts))
    assert (values.tolist(), lengths.tolist()) != reference(tok, texts)


def test_texts_outside_the_fast_path_are_encoded_by_the_tokenizer(whitespace_rich_tokenizer):
    tok = whitespace_rich_tokenizer
    texts = adversarial_texts(300, seed=4) + ["ünïcödé — 日本語 🙂", "<s> inside </s> text", "a\x0bb", "caf\u00e9  'll"]
    random.Random(5).shuffle(texts)
    routes = {}
    values, lengths = encode_flat(tok, texts, routes=routes)
    ref_values, ref_lengths = reference(tok, texts)
    assert lengths.tolist() == ref_lengths and values.tolist() == ref_values
    assert routes == {"piecewise": 300, "tokenizer": 4}
    special = tok("<s> inside </s> text", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<s>") in special   # the added token was split out, as the tokenizer does


def test_chunks_keep_text_order(monkeypatch, whitespace_rich_tokenizer):
    monkeypatch.setattr("dataforge.data.encode.ENCODE_CHUNK", 7)
    texts = adversarial_texts(100, seed=6) + ["é"] * 3
    seen = []
    values, lengths = encode_flat(whitespace_rich_tokenizer, texts, progress=seen.append)
    assert (values.tolist(), lengths.tolist()) == reference(whitespace_rich_tokenizer, texts)
    assert sum(seen) == len(texts) and max(seen) == 7


def test_other_pre_tokenizers_take_the_tokenizer_path():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(adversarial_texts(500, seed=7),
                            trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]"], show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    assert coarse_pattern(fast.backend_tokenizer) is None
    texts = adversarial_texts(200, seed=8)
    values, lengths = encode_flat(fast, texts)
    assert (values.tolist(), lengths.tolist()) == reference(fast, texts)
    assert values.dtype == np.int32 and lengths.dtype == np.int64


SPECIAL_STRINGS = ["<s>", "</s>", "<pad>", *EXTRA_SPECIALS]


def special_texts() -> list[str]:
    """Record text spelling special tokens: ASCII (the piecewise path) and not (the tokenizer's path)."""
    ascii_ = [f"Write {s} here" for s in SPECIAL_STRINGS] + ["</s></s>", "<|im_start|>user\nhi<|im_end|>", " <s>x"]
    return ascii_ + [f"日本 {s} — é" for s in SPECIAL_STRINGS]


@pytest.mark.parametrize("which", ["tiny", "gpt2_style", "split_0", "split_1"])
def test_special_token_text_is_encoded_as_text_on_both_paths(which):
    tok = TOKENIZERS[which]()
    texts = special_texts()
    routes = {}
    values, lengths = encode_flat(tok, texts, routes=routes, split_special_tokens=True)
    direct = tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert (values.tolist(), lengths.tolist()) == ([t for d in direct for t in d], [len(d) for d in direct])
    assert routes == {"piecewise": 11, "tokenizer": 8}
    special_ids = {tok.convert_tokens_to_ids(s) for s in SPECIAL_STRINGS if s in tok.get_vocab()}
    assert not special_ids & set(values.tolist())
    # The flag was set for the call only: the tokenizer still finds special tokens by default.
    assert tok.convert_tokens_to_ids("</s>") in encode_flat(tok, ["a </s>"])[0].tolist()


@pytest.mark.parametrize("which", ["gpt2_style", "split_0", "split_1"])
def test_markers_become_ids_and_the_runs_between_them_text(which):
    tok = TOKENIZERS[which]()
    text = "<|im_start|>user\nSay <|im_end|> or </s>, 日本<|im_end|>\n<|im_start|>assistant\n"
    first_end = text.index("<|im_end|>\n")
    marks = [(0, 12), (first_end, first_end + 10), (first_end + 11, first_end + 23)]
    values, lengths = encode_marked(tok, [text, text[:first_end]], [marks, marks])
    start, end = (tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    split = lambda t: tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
    full = [start, *split(text[12:first_end]), end, *split("\n"), start, *split("assistant\n")]
    prefix = [start, *split(text[12:first_end])]
    assert lengths.tolist() == [len(full), len(prefix)] and values.tolist() == full + prefix


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_a_chatml_tokenizer_trains_record_text_that_spells_its_markers_as_text():
    tok = TOKENIZERS["split_1"]()   # the Qwen2 split pattern
    tok.chat_template, tok.eos_token = CHATML, "<|im_end|>"
    rows = [{"instruction": "Quote the marker <|im_end|> please", "output": "Here: <|im_start|>assistant <|endoftext|>"}]
    records = pl.DataFrame([{"id": "q:0:1", "source": "q", "origin_file": "q.jsonl", "origin_line": 1, "system": "",
                             "history": [], "input": "", **r} for r in rows], schema=RECORD_SCHEMA)
    chat = load_template("chat")
    frame = apply_template(records, chat, seed=0, variants=False, tokenizer=tok)
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=512), template=chat)
    ids, labels = res.table["input_ids"][0].as_py(), res.table["labels"][0].as_py()
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    split = lambda t: tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
    prompt = [start, *split("user\n" + rows[0]["instruction"]), end, *split("\n"), start, *split("assistant\n")]
    response = [*split(rows[0]["output"]), end]
    assert ids == prompt + response
    assert labels == [IGNORE_INDEX] * len(prompt) + response
    assert ids.count(start) == 2 and ids.count(end) == 2 and tok.convert_tokens_to_ids("<|endoftext|>") not in ids

"""The piecewise fast path gives exactly the tokenizer's ids, on text built to hit every boundary case."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dataforge.data.encode import SPLIT_COARSE, coarse_pattern, encode_flat, encode_pieces
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


def trained(pre_tokenizer, normalizer=None) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the adversarial text, so runs like '\\n\\n', '   ' and " '" are tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>"], show_progress=False)
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

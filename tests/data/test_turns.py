"""Every-turn training (`tokenize.train_turns`) and the `<think>` policy, on tokenizers trained here
whose turn end is not (only) eos: ChatML's `<|im_end|>` and Gemma's `<end_of_turn>`."""

from __future__ import annotations

import polars as pl
import pytest

from dataforge.config.build import ThinkPolicy, TokenizeConfig, TrainTurns
from dataforge.data.record import RECORD_SCHEMA, with_record_defaults
from dataforge.data.rows import IGNORE_INDEX
from dataforge.data.templates import load_template, render
from dataforge.data.tokenize import tokenize_records
from dataforge.data.turns import render_records
from tests.data.chat_tokenizers import chat_tokenizer

TURN_END = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>"}
CONVERSATIONS = [   # (history, instruction, output)
    ([("user", "Why does alarm E14 sound?"), ("assistant", "The reservoir float is low.")],
     "And how do I clear it?", "Top up the reservoir, then press reset."),
    ([("user", "pH is 7.4 on lettuce."), ("assistant", "Too high; dose acid."), ("user", "How much?"),
      ("assistant", "5 ml per 100 L, then wait.")],
     "Then what?", "Recheck after fifteen minutes."),
    # A user turn quoting the turn-end marker's text: it stays text, and ends no turn.
    ([("user", "My log shows <|im_end|> and <end_of_turn> in a line."), ("assistant", "That is markup, not an error.")],
     "Should I delete it?", "No, leave the log as it is."),
]


def _records(conversations) -> pl.DataFrame:
    rows = [{"id": f"r{i}", "source": "s", "origin_file": "f", "origin_line": i, "system": "",
             "history": [{"role": r, "content": c} for r, c in history], "instruction": instruction, "input": "",
             "output": output} for i, (history, instruction, output) in enumerate(conversations)]
    return with_record_defaults(pl.DataFrame(rows, schema={k: RECORD_SCHEMA[k] for k in rows[0]}))


def _build(records, tokenizer, template="chat", train_turns=TrainTurns.all, think=ThinkPolicy.keep, **tok):
    tpl = load_template(template)
    rendered = render_records(records, tpl, tokenizer, seed=1, variants=False, think=think, train_turns=train_turns)
    cfg = TokenizeConfig(tokenizer="x", train_turns=train_turns, max_length=tok.pop("max_length", 512), **tok)
    return rendered, tokenize_records(rendered, tokenizer, cfg, template=tpl, think=think).table.to_pylist()


def _trained_texts(tokenizer, row) -> list[str]:
    """The decoded runs of trained tokens, in order."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


def _expected(style: str, tokenizer, assistants: list[str]) -> list[str]:
    """Written from the template's definition, not from the code under test: every assistant turn is
    trained through its turn end and the newline the template writes after it; the final one ends
    with eos (ChatML's eos is the turn end itself, so nothing follows it)."""
    end = TURN_END[style]
    final = f"{assistants[-1]}{end}" if tokenizer.eos_token == end else f"{assistants[-1]}{end}\n{tokenizer.eos_token}"
    return [f"{a}{end}\n" for a in assistants[:-1]] + [final]


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_every_assistant_turn_is_trained_through_its_turn_end(style):
    tokenizer = chat_tokenizer(style)
    _, rows = _build(_records(CONVERSATIONS), tokenizer)
    end_id = tokenizer.convert_tokens_to_ids(TURN_END[style])
    for (history, _, output), row in zip(CONVERSATIONS, rows, strict=True):
        assistants = [c for r, c in history if r == "assistant"] + [output]
        assert _trained_texts(tokenizer, row) == _expected(style, tokenizer, assistants)
        ends = [i for i, t in enumerate(row["input_ids"]) if t == end_id]
        turns = len(history) + 2   # the history, the last user turn, the answer
        assert len(ends) == turns   # the quoted marker text in a user turn is text, not a turn end
        trained_ends = [i for i in ends if row["labels"][i] != IGNORE_INDEX]
        assert len(trained_ends) == len(assistants)
        # A trained turn end is the one right after an assistant turn: user turns alternate with them.
        assert trained_ends == ends[1::2]


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_train_turns_last_trains_only_the_final_answer(style):
    tokenizer = chat_tokenizer(style)
    _, rows = _build(_records(CONVERSATIONS), tokenizer, train_turns=TrainTurns.last)
    for (_, _, output), row in zip(CONVERSATIONS, rows, strict=True):
        assert _trained_texts(tokenizer, row) == _expected(style, tokenizer, [output])


def test_text_template_trains_each_turn_with_its_turn_suffix():
    from dataforge.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    _, rows = _build(_records(CONVERSATIONS[:2]), tokenizer, template="alpaca")
    for (history, _, output), row in zip(CONVERSATIONS[:2], rows, strict=True):
        earlier = [f"{c}\n\n" for r, c in history if r == "assistant"]   # alpaca's history: "### Response:\n{content}\n\n"
        assert [t.strip() for t in _trained_texts(tokenizer, row)] == [t.strip() for t in earlier] + [f"{output}</s>"]


def test_a_truncated_record_still_trains_its_earlier_turns_whole():
    tokenizer = chat_tokenizer("chatml")
    answer = "Recheck after fifteen minutes, then log the reading. " * 10
    conv = [(CONVERSATIONS[1][0], "So what now?", answer)]
    _, full = _build(_records(conv), tokenizer)
    _, [row] = _build(_records(conv), tokenizer, max_length=len(full[0]["input_ids"]) - 12)
    texts = _trained_texts(tokenizer, row)
    assert texts[:-1] == ["Too high; dose acid.<|im_end|>\n", "5 ml per 100 L, then wait.<|im_end|>\n"]
    assert texts[-1].endswith("<|im_end|>") and answer.startswith(texts[-1].removesuffix("<|im_end|>"))
    assert len(texts[-1]) < len(answer)   # the final answer was cut, its end kept


# The user turn quotes a special token's text, so the record also takes the marker route.
THINK = [([("user", "Is pH 7.4 fine for lettuce? The log ends with <|im_end|>."), ("assistant", "<think>Lettuce wants 5.8-6.2.</think>\nNo, too high.")],
          "What do I add?", "<think>High pH needs acid.</think>\n\npH Down, 5 ml at a time.")]


@pytest.mark.parametrize("think, trained", [
    (ThinkPolicy.keep, ["<think>Lettuce wants 5.8-6.2.</think>\nNo, too high.<|im_end|>\n",
                        "<think>High pH needs acid.</think>\n\npH Down, 5 ml at a time.<|im_end|>"]),
    (ThinkPolicy.strip, ["No, too high.<|im_end|>\n", "pH Down, 5 ml at a time.<|im_end|>"]),
    (ThinkPolicy.final_only, ["No, too high.<|im_end|>\n", "pH Down, 5 ml at a time.<|im_end|>"]),
])
def test_think_policy_decides_what_is_rendered_and_trained(think, trained):
    tokenizer = chat_tokenizer("chatml")
    rendered, [row] = _build(_records(THINK), tokenizer, think=think)
    assert _trained_texts(tokenizer, row) == trained
    text = tokenizer.decode(row["input_ids"])
    assert ("<think>" in text) is (think is not ThinkPolicy.strip)
    # Eval renders a record the same way: render() with the policy gives the build's prompt and response.
    history, instruction, output = THINK[0]
    single = render(load_template("chat"), instruction, history=[{"role": r, "content": c} for r, c in history],
                    output=output, tokenizer=tokenizer, think=think)
    assert single == (rendered["prompt"][0], rendered["response"][0])
    if think is ThinkPolicy.final_only:   # the reasoning is input: at the end of the prompt, not trained
        assert rendered["prompt"][0].endswith("<|im_start|>assistant\n<think>High pH needs acid.</think>\n\n")

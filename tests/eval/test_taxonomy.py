"""Every taxonomy rule on examples that should and should not carry its label."""

from __future__ import annotations

import pytest

from dataforge.eval.taxonomy import (
    FormatSpec,
    LanguageRule,
    LeakageRule,
    LengthRule,
    RefusalRule,
    RepetitionRule,
    TaxonomyConfig,
    is_length_off,
    is_refusal,
    is_repetitive,
    is_wrong_language,
    judge_language,
    judge_output,
    label_output,
    label_transitions,
    leaks_template,
    summarize_labels,
    violates_format,
)

PROMPT = ("Below is an instruction that describes a task.\n\n### Instruction:\nHow do I reset the Brightline "
          "router to its factory settings?\n\n### Response:\n")
REF = "Hold the reset button on the back for ten seconds until the light blinks orange."
PROSE = ("The Industrial Revolution began in Great Britain in the late eighteenth century and spread to "
         "continental Europe and North America. It transformed economies that had been based on agriculture "
         "and handicrafts into economies based on large-scale industry, mechanized manufacturing, and the "
         "factory system.")


def _labels(prediction, reference=REF, prompt=PROMPT, finish=None, rouge_l=0.5, spec=None, config=None):
    return label_output(prompt, prediction, reference, finish, rouge_l, config or TaxonomyConfig(), spec or FormatSpec())


def test_empty_output_is_only_empty_and_maybe_truncated():
    assert _labels("") == ["empty"]
    assert _labels("  \n\t ") == ["empty"]
    assert _labels("", finish="length") == ["empty", "truncated"]


def test_truncated_means_stopped_by_max_new_tokens():
    assert "truncated" in _labels("Hold the reset button on the back", finish="length")
    assert "truncated" not in _labels("Hold the reset button.", finish="stop")
    assert "truncated" not in _labels("Hold the reset button.", finish=None)


@pytest.mark.parametrize("text", [
    "no no no no no no no no no no no no",
    "The light means there is a problem. The light means there is a problem. The light means",
    "Use the chat in the app, call the support line on the box, or write to support. "
    "Use the chat in the app, call the support line on the box, or write to support. Use the chat",
    "abc " + "xyzzy-" * 80,
])
def test_loops_and_overcompressible_text_are_repetition(text):
    assert is_repetitive(text, RepetitionRule())


@pytest.mark.parametrize("text", [
    PROSE,
    "ha ha ha, that is funny",
    "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| 4 | 5 | 6 |\n| 7 | 8 | 9 |",
    "Step 1: open the app. Step 2: choose Settings. Step 3: choose Wi-Fi. Step 4: save.",
])
def test_natural_text_tables_and_lists_are_not_repetition(text):
    assert not is_repetitive(text, RepetitionRule())


def test_repetition_thresholds_are_configurable():
    text = "very very very very very good"
    assert not is_repetitive(text, RepetitionRule())
    assert is_repetitive(text, RepetitionRule(min_span_tokens=5))


@pytest.mark.parametrize("text", [
    "### Instruction:\nHow do I reset it?\n\n### Response:\nHold the button.",
    "Hold the button.\nInput: the router\nOutput: reset",
    "Hold the button for ten seconds.<|im_start|>user\nthanks",
    "Hold the button.\nUser: and then what?",
    "How do I reset the Brightline router to its factory settings? Hold the button.",
    "Below is an instruction that describes a task. Hold the reset button.",
])
def test_template_markers_new_turns_and_prompt_echoes_are_leakage(text):
    assert leaks_template(text, PROMPT, REF, LeakageRule())


def test_markers_the_reference_also_contains_are_not_leakage():
    ref = "Input: a list of numbers\nOutput: their sum"
    assert not leaks_template("Input: a list of numbers\nOutput: the total", "Write a spec.", ref, LeakageRule())
    assert not leaks_template(REF, PROMPT, REF, LeakageRule())
    quoted = "Hold the button on the back for ten seconds until the light blinks orange."
    assert not leaks_template(quoted, "Context: Hold the button on the back for ten seconds until the light "
                              "blinks orange. Question: how?", quoted, LeakageRule())


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that.",
    "As an AI language model, I do not have opinions.",
    "I’m afraid I am not able to do this.",
])
def test_declining_is_refusal(text):
    assert is_refusal(text, REF, RefusalRule())


def test_refusal_when_the_reference_also_refuses_or_an_apology_that_helps_is_not_refusal():
    assert not is_refusal("I can't help with that.", "I cannot help with requests like this.", RefusalRule())
    assert not is_refusal("Sorry for the trouble! Hold the reset button for ten seconds.", REF, RefusalRule())


def test_wrong_script_and_wrong_latin_language_are_wrong_language():
    rule = LanguageRule()
    assert is_wrong_language("Удерживайте кнопку сброса десять секунд, пока индикатор не замигает.", REF, rule)
    assert is_wrong_language("Halten Sie die Taste auf der Rückseite zehn Sekunden lang gedrückt, bis die "
                             "Anzeige orange blinkt und das ist nicht schwer.", REF, rule)
    assert is_wrong_language("リセットボタンを十秒間押し続けてください。ライトがオレンジ色に点滅します。",
                             "按住复位按钮十秒钟，直到指示灯闪烁橙色，然后等待两分钟。", rule)
    assert not is_wrong_language("Press and hold the reset button for about ten seconds, and the light "
                                 "will blink orange.", REF, rule)
    assert not is_wrong_language("OK", REF, rule)  # too short to judge


@pytest.mark.parametrize("text", [
    "A Comprehensive Review of Router Firmware, available at https://www.amazon.com/dp/B0123 and on amazon.com.",
    "Do a reset: hold a pin in the hole for a count of ten, as the manual at brightline.example/docs says.",
    "Do a forced reset. Hold the button as a pair of seconds pass, then a few more, until a light appears; do a check after.",
    "Run this to reset it:\n```bash\nsudo brightctl reset --factory --yes\n```\nThen wait for the orange light.",
])
def test_english_with_urls_titles_domains_and_code_is_not_wrong_language(text):
    assert judge_language(text, REF, LanguageRule()).wrong is False


def test_short_texts_abstain_from_the_language_rule_and_the_reason_is_kept():
    judged = judge_output(PROMPT, "Ten seconds.", REF, None, 0.2, TaxonomyConfig(), FormatSpec())
    assert judged.abstained == {"wrong_language": "output too short"}
    judged = judge_output(PROMPT, "Tenez le bouton appuyé dix secondes jusqu'à ce que le voyant clignote.", "Yes",
                          None, 0.0, TaxonomyConfig(), FormatSpec())
    assert judged.abstained == {"wrong_language": "reference too short"} and "wrong_language" not in judged.labels
    url_only = "See https://brightline.example/support/reset-guide-2024 and www.brightline.example/faq"
    assert judge_language(url_only, REF, LanguageRule()).wrong is None


QUOTE_PROMPT = ("### Instruction:\nQuote the sentence from the manual that says how long to hold the button.\n\n"
                "### Input:\nThe router has one button. Hold the reset button for ten seconds until the light blinks "
                "orange. Then wait two minutes.\n\n### Response:\n")
QUOTE_REF = "It says to hold the reset button for ten seconds."


def test_quoting_the_input_is_not_leakage_when_the_instruction_asks_for_a_quote():
    quote = "Hold the reset button for ten seconds until the light blinks orange."
    assert not leaks_template(quote, QUOTE_PROMPT, QUOTE_REF, LeakageRule())
    for prompt in (QUOTE_PROMPT.replace("Quote the sentence", "Copy the exact sentence"),
                   QUOTE_PROMPT.replace("Quote the sentence", "Extract the sentence"),
                   QUOTE_PROMPT.replace("Quote the sentence from", "Repeat word for word the line in")):
        assert not leaks_template(quote, prompt, QUOTE_REF, LeakageRule()), prompt


def test_restating_the_quote_request_or_echoing_input_nobody_asked_for_is_leakage():
    quote = "Hold the reset button for ten seconds until the light blinks orange."
    restated = "Quote the sentence from the manual that says how long to hold the button. " + quote
    assert leaks_template(restated, QUOTE_PROMPT, QUOTE_REF, LeakageRule())
    summarize = QUOTE_PROMPT.replace("Quote the sentence from the manual that says how long to hold the button.",
                                     "Summarize the manual in one sentence.")
    assert leaks_template(quote, summarize, QUOTE_REF, LeakageRule())


def test_format_violations_for_json_labels_and_numbers():
    json_spec = FormatSpec(format="json")
    assert not violates_format('{"a": 1}', json_spec)
    assert not violates_format('```json\n[1, 2]\n```', json_spec)
    assert violates_format('{"a": 1', json_spec)
    assert violates_format('"just a string"', json_spec)
    labels = FormatSpec(format="label", labels=["positive", "negative"])
    assert not violates_format(" Positive. ", labels)
    assert violates_format("mostly positive", labels)
    assert violates_format("Positive", FormatSpec(format="label", labels=["positive"], case_sensitive_labels=True))
    number = FormatSpec(format="number")
    for ok in ("42", "-3.5", "1,234,567", "12%", "6.02e23", "42."):
        assert not violates_format(ok, number), ok
    for bad in ("forty-two", "42 apples", "1,23,4"):
        assert violates_format(bad, number), bad
    assert not violates_format("anything at all", FormatSpec())


def test_length_off_compares_visible_characters_with_the_reference():
    rule = LengthRule()
    assert is_length_off("Two years.", "The router has a two-year warranty that covers hardware faults.", rule)
    assert is_length_off("x " * 400, REF, rule)
    assert not is_length_off("Hold the reset button for ten seconds.", REF, rule)
    assert not is_length_off("Yes.", "Yes, it does.", rule)  # reference too short to judge


def test_low_overlap_needs_a_well_formed_output():
    assert _labels("Bananas grow in warm climates around the world today.", rouge_l=0.05) == ["low_overlap"]
    assert _labels("Hold the reset button for ten seconds please.", rouge_l=0.6) == []
    assert _labels("Hold it.", rouge_l=0.05) == ["length_off"]  # another label explains it
    assert _labels("Bananas grow in warm climates around the world.", reference="", rouge_l=0.0) == []


def test_rules_can_be_switched_off_per_task():
    config = TaxonomyConfig(refusal={"enabled": False}, low_overlap={"enabled": False})
    assert _labels("I'm sorry, but I can't help with that.", config=config, rouge_l=None) == []


def test_summary_counts_rates_and_examples_and_transitions_pair_by_sample():
    base = [{"sample_id": "a", "labels": ["empty"]}, {"sample_id": "b", "labels": ["repetition", "truncated"]},
            {"sample_id": "c", "labels": []}]
    tuned = [{"sample_id": "b", "labels": ["truncated"]}, {"sample_id": "a", "labels": []},
             {"sample_id": "c", "labels": ["refusal"]}, {"sample_id": "z", "labels": ["refusal"]}]
    summary = summarize_labels(base)
    assert summary["empty"]["count"] == 1 and summary["empty"]["rate"] == pytest.approx(1 / 3)
    assert summary["clean"]["count"] == 1 and summary["repetition"]["examples"][0]["sample_id"] == "b"
    moves = label_transitions(base, tuned)
    assert moves["empty"] == {"base": 1, "tuned": 0, "new": 0, "fixed": 1, "paired": 3}
    assert moves["truncated"] == {"base": 1, "tuned": 1, "new": 0, "fixed": 0, "paired": 3}
    assert moves["refusal"] == {"base": 0, "tuned": 1, "new": 1, "fixed": 0, "paired": 3}

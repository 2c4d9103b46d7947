"""Templates: exact Alpaca text, seeded variants, chat rendering through the tokenizer, file validation."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest
import xxhash
from tool_tokenizer import tool_tokenizer_folder

from dataforge.config.build import TokenizeConfig
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.templates import apply_template, list_templates, load_template, render
from dataforge.data.tokenize import IGNORE_INDEX, tokenize_records
from dataforge.errors import ConfigError, InputError
from dataforge.models import load_tokenizer
from dataforge.paths import templates_dir

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def frame(rows: list[dict]) -> pl.DataFrame:
    full = []
    for i, r in enumerate(rows):
        full.append({"id": f"s:0:{i + 1}", "source": "s", "origin_file": "data.jsonl", "origin_line": i + 1,
                     "system": "", "history": [], "input": "", "content_hash": f"h{i}", **r})
    return pl.DataFrame(full, schema={**RECORD_SCHEMA, "content_hash": pl.Utf8})


MIXED = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "output": "Blue."},
    {"instruction": "Continue.", "output": "Done.", "system": "Answer briefly.",
     "history": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]},
    {"instruction": "Braces {like} these", "input": "{input} {0}", "output": "{output}"},
]


def test_alpaca_prompts_match_the_stanford_text_exactly():
    alpaca = load_template("alpaca")
    out = apply_template(frame(MIXED[:2]), alpaca, seed=0, variants=False)
    assert out["prompt"].to_list() == [
        ALPACA_WITH_INPUT.format(instruction="Add the numbers.", input="2 and 3"),
        ALPACA_NO_INPUT.format(instruction="Name a colour."),
    ]
    assert out["response"].to_list() == ["5", "Blue."]
    assert render(alpaca, "Name a colour.", output="Blue.") == (ALPACA_NO_INPUT.format(instruction="Name a colour."), "Blue.")


def test_plain_template_has_no_headers():
    plain = load_template("plain")
    out = apply_template(frame(MIXED[:2]), plain, seed=0, variants=False)
    assert out["prompt"].to_list() == ["Add the numbers.\n\n2 and 3\n\n", "Name a colour.\n\n"]


def test_history_and_system_render_as_the_file_declares():
    prompt, _ = render(load_template("alpaca"), "Continue.", system="Answer briefly.",
                       history=[{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}])
    assert prompt == ("Answer briefly.\n\n" + ALPACA_NO_INPUT.split("\n\n")[0] + "\n\n"
                      "### Instruction:\nHi there\n\n### Response:\nHello!\n\n"
                      "### Instruction:\nContinue.\n\n### Response:\n")


@pytest.mark.parametrize("name", ["alpaca", "plain", "chat"])
def test_frame_and_single_record_rendering_agree(name, tok):
    template = load_template(name)
    variants = template.n_variants > 1
    out = apply_template(frame(MIXED), template, seed=7, variants=variants, tokenizer=tok)
    for row in out.iter_rows(named=True):
        single = render(template, row["instruction"], row["input"], row["system"], row["history"], row["output"],
                        tokenizer=tok, variant=row["template_variant"])
        assert single == (row["prompt"], row["response"])
        assert render(template, row["instruction"], row["input"], row["system"], row["history"], tokenizer=tok,
                      variant=row["template_variant"]) == (row["prompt"], "")


def test_variants_are_chosen_by_seeded_hash_of_the_content():
    alpaca = load_template("alpaca")
    records = frame([{"instruction": f"Task {i}", "output": f"Answer {i}", "input": "x" if i % 2 else ""} for i in range(200)])
    a = apply_template(records, alpaca, seed=3, variants=True)
    expected = [xxhash.xxh3_64_intdigest(f"3:{h}".encode()) % alpaca.n_variants for h in records["content_hash"]]
    assert a["template_variant"].to_list() == expected
    assert set(expected) == set(range(alpaca.n_variants))
    # Reordering the records does not change any record's variant; another seed does.
    shuffled = apply_template(records.reverse(), alpaca, seed=3, variants=True)
    assert dict(zip(shuffled["id"], shuffled["template_variant"], strict=True)) == dict(zip(a["id"], a["template_variant"], strict=True))
    assert apply_template(records, alpaca, seed=4, variants=True)["template_variant"].to_list() != expected
    for row in a.iter_rows(named=True):
        header = alpaca.spec.headers[row["template_variant"]]
        assert row["prompt"].startswith((header.with_input if row["input"] else header.no_input) + "\n\n### Instruction:\n")


def test_variants_off_use_the_canonical_header():
    out = apply_template(frame(MIXED[:2]), load_template("alpaca"), seed=3, variants=False)
    assert out["template_variant"].to_list() == [0, 0]


def test_variants_on_a_template_without_headers_is_a_config_error():
    with pytest.raises(ConfigError, match="template.variants: template 'plain' declares no header variants"):
        apply_template(frame(MIXED[:1]), load_template("plain"), seed=0, variants=True)


def test_chat_prompt_is_a_prefix_and_the_response_is_the_rest(tok):
    out = apply_template(frame(MIXED), load_template("chat"), seed=0, variants=False, tokenizer=tok)
    first = out.row(0, named=True)
    messages = [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    assert first["prompt"] == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template([*messages, {"role": "assistant", "content": "5"}], tokenize=False)
    assert first["prompt"] + first["response"] == full
    third = out.row(2, named=True)
    conv = [{"role": "system", "content": "Answer briefly."}, *MIXED[2]["history"], {"role": "user", "content": "Continue."},
            {"role": "assistant", "content": "Done."}]
    assert third["prompt"] + third["response"] == tok.apply_chat_template(conv, tokenize=False)


def test_chat_template_breaking_the_prefix_property_raises_naming_the_template(tok):
    broken = load_tokenizer("tiny")
    # A template that closes the user turn differently when a generation prompt is asked for.
    broken.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                            "{% if add_generation_prompt %}<next>{% endif %}")
    with pytest.raises(ConfigError, match="template 'chat' .* does not render the prompt as a prefix") as exc:
        apply_template(frame(MIXED[:1]), load_template("chat"), seed=0, variants=False, tokenizer=broken)
    assert "s:0:1" in str(exc.value)


def test_chat_template_needs_a_tokenizer():
    with pytest.raises(ConfigError, match="no tokenizer was given"):
        apply_template(frame(MIXED[:1]), load_template("chat"), seed=0, variants=False)


def test_unknown_template_suggests_the_nearest_name():
    with pytest.raises(ConfigError) as exc:
        load_template("alpca")
    msg = str(exc.value)
    assert "did you mean 'alpaca'?" in msg and "available: alpaca, chat, plain" in msg


def test_every_shipped_template_validates():
    names = list_templates()
    assert {"alpaca", "plain", "chat"} <= set(names)
    for name in names:
        t = load_template(name)
        assert t.sha256 == hashlib.sha256((templates_dir() / f"{name}.yaml").read_bytes()).hexdigest()


def test_a_user_template_file_loads_by_path(tmp_path):
    path = tmp_path / "qa.yaml"
    path.write_text('description: Q and A.\nprompt: "Q: {instruction}\\nContext: {input}\\nA:"\n'
                    'prompt_no_input: "Q: {instruction}\\nA:"\nresponse: " {output}"\n')
    t = load_template(str(path))
    assert t.name == "qa" and t.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert render(t, "Why?", output="Because.") == ("Q: Why?\nA:", " Because.")


@pytest.mark.parametrize("body, fragment", [
    ('description: x\nprompt: "{instrution} {input}"\nprompt_no_input: "{instruction}"\n',
     "prompt: unknown placeholder(s) {instrution}"),
    ('description: x\nprompt: "{instruction} {input}"\n', "prompt_no_input: required for kind 'text'"),
    ('description: x\nprompt: "{instruction} {input}"\nprompt_no_input: "{instruction}"\ncolour: red\n', "colour: unknown key"),
    ('description: x\nprompt: "{instruction} {input"\nprompt_no_input: "{instruction}"\n', "prompt: bad braces"),
    ('description: x\nprompt: "{header}{instruction} {input}"\nprompt_no_input: "{header}{instruction}"\n',
     "{header} is used in a prompt but 'headers' is not declared"),
    ('description: x\nkind: chat\nprompt: "{instruction} {input}"\n', "kind 'chat' renders with the tokenizer's chat template"),
])
def test_bad_template_files_name_the_file_and_field(tmp_path, body, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_template(str(path))
    assert str(path) in str(exc.value) and fragment in str(exc.value)


def test_history_role_without_a_format_is_an_input_error():
    records = frame([{"instruction": "Go.", "output": "Ok.", "history": [{"role": "tool", "content": "42"}]}])
    with pytest.raises(InputError) as exc:
        apply_template(records, load_template("plain"), seed=0, variants=False)
    assert exc.value.file == "data.jsonl" and exc.value.line == 1 and exc.value.field == "history"
    assert "s:0:1" in str(exc.value)


TIDE_TOOL = {"name": "get_tide_times", "description": "Tide times for a harbour.",
             "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}}, "required": ["harbour"]}}
CALL = '{"name": "get_tide_times", "arguments": {"harbour": "Port Isaac"}}'
TOOL_RECORD = {"instruction": "Low tide at Port Isaac?", "output": "At 04:12.", "system": "Be brief.",
               "tools": "[" + json.dumps(TIDE_TOOL) + "]",
               "tool_turns": [{"role": "assistant", "content": CALL}, {"role": "tool", "content": '{"low": "04:12"}'}]}


@pytest.fixture(scope="module")
def tool_tok(tmp_path_factory):
    """The tiny tokenizer with a chat template of our own that renders tool schemas and tool results."""
    return load_tokenizer(str(tool_tokenizer_folder(tmp_path_factory.mktemp("tool-tok"))))


def test_tool_conversations_render_tools_and_calls_through_the_chat_template(tool_tok):
    chat = load_template("chat")
    out = apply_template(frame([TOOL_RECORD, MIXED[1]]), chat, seed=0, variants=False, tokenizer=tool_tok)
    prompt, response = out.row(0, named=True)["prompt"], out.row(0, named=True)["response"]
    assert prompt == ("<s>## Tools\n" + json.dumps(TIDE_TOOL) + "\n## System\nBe brief.\n\n"
                      "## User\nLow tide at Port Isaac?\n\n## Assistant\n" + CALL + "</s>\n\n"
                      "## Tool result\n{\"low\": \"04:12\"}\n\n## Assistant\n")
    assert response == "At 04:12.</s>\n\n"
    plain = out.row(1, named=True)
    assert "## Tools" not in plain["prompt"] and plain["response"] == "Blue.</s>\n\n"
    assert render(chat, TOOL_RECORD["instruction"], system="Be brief.", output="At 04:12.", tokenizer=tool_tok,
                  tools=TOOL_RECORD["tools"], tool_turns=TOOL_RECORD["tool_turns"]) == (prompt, response)


def test_tools_with_a_chat_template_that_ignores_them_is_a_config_error(tok):
    with pytest.raises(ConfigError, match="does not render tool schemas"):
        apply_template(frame([TOOL_RECORD]), load_template("chat"), seed=0, variants=False, tokenizer=tok)


def test_text_templates_refuse_tool_conversations_naming_the_record():
    with pytest.raises(InputError) as info:
        apply_template(frame([MIXED[1], TOOL_RECORD]), load_template("alpaca"), seed=0, variants=False)
    assert info.value.field == "tools" and info.value.line == 2
    assert "cannot render tool calls" in str(info.value) and "template 'chat'" in str(info.value)
    observation_only = {**TOOL_RECORD, "tools": ""}
    with pytest.raises(InputError, match="cannot render tool calls"):
        apply_template(frame([observation_only]), load_template("plain"), seed=0, variants=False)


@pytest.mark.parametrize("name", ["alpaca", "plain", "chat"])
def test_plain_text_records_have_no_prompt_and_are_trained_whole(name, tok):
    text = 'Rivers carry "sediment" downstream; </s> here is text. 川は土砂を運ぶ。'
    records = frame([{"instruction": "", "output": text, "kind": "text"}, MIXED[1]])
    template = load_template(name)
    out = apply_template(records, template, seed=0, variants=False, tokenizer=tok)
    assert out.row(0, named=True)["prompt"] == "" and out.row(0, named=True)["response"] == text
    assert out.row(1, named=True)["prompt"] != ""
    table = tokenize_records(out, tok, TokenizeConfig(max_length=256), template=template).table
    ids, labels = table.column("input_ids")[0].as_py(), table.column("labels")[0].as_py()
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert labels == [IGNORE_INDEX] + ids[1:]     # every token of the text is trained, and the eos


@pytest.mark.parametrize("chat_template, message", [
    ("{{ ''.__class__.__mro__ }}", "tries what the jinja sandbox forbids: SecurityError"),
    ("{{ raise_exception('Conversation roles must alternate user/assistant') }}",
     "failed: TemplateError: Conversation roles must alternate user/assistant"),
])
def test_chat_template_that_raises_is_a_config_error_naming_tokenizer_and_template(chat_template, message):
    tok = load_tokenizer("tiny")
    tok.chat_template = chat_template
    with pytest.raises(ConfigError) as exc:
        apply_template(frame(MIXED[:1]), load_template("chat"), seed=0, variants=False, tokenizer=tok)
    text = str(exc.value)
    assert "template 'chat'" in text and f"tokenizer '{tok.name_or_path}'" in text and message in text

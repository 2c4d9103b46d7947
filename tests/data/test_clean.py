"""The clean stage: drop reasons naming the field, meaning-preserving whitespace collapsing, Unicode
normalization, and a content hash checked against xxhash computed here, independently."""

from __future__ import annotations

import polars as pl
import pytest
import xxhash

from dataforge.config.build import CleanConfig, LengthBounds
from dataforge.data.clean import clean
from dataforge.data.record import RECORD_SCHEMA


def records(*rows: dict) -> pl.DataFrame:
    full = []
    for i, row in enumerate(rows):
        base = {"id": f"t:0:{i}", "source": "t", "origin_file": "mem", "origin_line": i, "system": "",
                "history": [], "instruction": "Do it.", "input": "", "output": "Done."}
        full.append(base | row)
    return pl.DataFrame(full, schema=RECORD_SCHEMA)


def one(row: dict, cfg: CleanConfig | None = None) -> dict:
    res = clean(records(row), cfg or CleanConfig())
    assert res.kept.height == 1, res.rejected.to_dicts()
    return res.kept.row(0, named=True)


def test_each_drop_reason_names_the_field():
    cfg = CleanConfig(instruction=LengthBounds(min_chars=3, max_chars=100), output=LengthBounds(min_chars=1, max_chars=20))
    res = clean(records(
        {"instruction": "Fine.", "output": "Fine."},
        {"instruction": "  \t\n "},
        {"output": "\n \n"},
        {"instruction": "Hi"},
        {"output": "x" * 21},
        {"input": "bell\x07"},
        {"output": "broken \ufffd text"},
        {"history": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "esc\x1b[0m"}]},
        {"system": "nel\x85"},
    ), cfg)
    assert res.kept["origin_line"].to_list() == [0]
    got = [(r["origin_line"], r["reason"], r["detail"]) for r in res.rejected.sort("origin_line").to_dicts()]
    assert got == [
        (1, "empty_instruction", "field 'instruction' is empty or whitespace only"),
        (2, "empty_output", "field 'output' is empty or whitespace only"),
        (3, "too_short", "field 'instruction' has 2 characters, fewer than instruction.min_chars = 3"),
        (4, "too_long", "field 'output' has 21 characters, more than output.max_chars = 20"),
        (5, "control_chars", "field 'input' holds U+0007, a control character, at character 4"),
        (6, "control_chars", "field 'output' holds U+FFFD, the replacement character (text that was not valid "
                             "Unicode), at character 7"),
        (7, "control_chars", "field 'history[1].content' holds U+001B, a control character, at character 3"),
        (8, "control_chars", "field 'system' holds U+0085, a control character, at character 3"),
    ]
    assert set(res.rejected["stage"]) == {"clean"}


def test_rejects_carry_the_record_as_it_came_in():
    res = clean(records({"instruction": "Say  \u00e9\u0301  hi\x07"}), CleanConfig())
    assert "Say  \u00e9\u0301  hi\\u0007" in res.rejected["record"][0]


def test_control_chars_are_kept_when_the_check_is_off():
    assert one({"output": "a\x07b"}, CleanConfig(drop_control_chars=False))["output"] == "a\x07b"


def test_whitespace_collapse_keeps_newlines_and_code_indentation():
    code = "\n\nHere is the fix:   \r\n\r\n\r\n\r\n    def add(a,  b):\n\t\treturn a\t+  b   \n\n\n\n    # done\n  "
    want = "    def add(a, b):\n\t\treturn a + b\n\n    # done"
    assert one({"output": code})["output"] == "Here is the fix:\n\n" + want
    assert one({"output": "\n\n" + want + "\n"})["output"] == want  # a field that starts indented stays indented


def test_single_line_fields_are_stripped_and_runs_collapsed():
    row = one({"instruction": "   What   is\t\tit?  ", "system": " Be  kind. ", "input": "\t a  b \t"})
    assert (row["instruction"], row["system"], row["input"]) == ("What is it?", "Be kind.", "a b")


def test_whitespace_is_left_alone_when_collapsing_is_off():
    cfg = CleanConfig(collapse_whitespace=False)
    assert one({"output": "  a   b  \n\n\n\n"}, cfg)["output"] == "  a   b  \n\n\n\n"
    assert clean(records({"output": " \n\t "}), cfg).rejected["reason"].to_list() == ["empty_output"]


@pytest.mark.parametrize("form, text, want", [
    ("NFC", "caf\u0065\u0301", "caf\u00e9"),
    ("NFKC", "\ufb01ne \u2460", "fine 1"),
    ("none", "caf\u0065\u0301", "caf\u0065\u0301"),
])
def test_unicode_normalization(form, text, want):
    row = one({"instruction": text, "output": "ascii only", "history": [{"role": "user", "content": text},
                                                                          {"role": "assistant", "content": "ok"}]},
              CleanConfig(normalize=form))
    assert row["instruction"] == want and row["history"][0]["content"] == want and row["output"] == "ascii only"


def test_history_turns_are_collapsed_too():
    row = one({"history": [{"role": "user", "content": "  two   spaces "}, {"role": "assistant", "content": "ok\n\n\n\nok"}]})
    assert row["history"] == [{"role": "user", "content": "two spaces"}, {"role": "assistant", "content": "ok\n\nok"}]


def independent_hash(r: dict) -> str:
    parts = [r["system"]] + [x for t in r["history"] for x in (t["role"], t["content"])] + \
            [r["instruction"], r["input"], r["output"]]
    return xxhash.xxh3_64(b"".join(f"{len(p)}:{p}".encode() for p in parts)).hexdigest()


def test_content_hash_is_xxh3_of_the_length_prefixed_normalized_fields():
    res = clean(records(
        {"instruction": "Résumé  please", "input": "ab", "output": "c"},
        {"instruction": "Re\u0301sume\u0301 please", "input": "a", "output": "bc"},
        {"system": "S", "history": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "🙂"}]},
        {"instruction": "Résumé please", "input": "ab", "output": "c"},
    ), CleanConfig())
    rows = res.kept.to_dicts()
    assert [r["content_hash"] for r in rows] == [independent_hash(r) for r in rows]
    assert rows[0]["content_hash"] == rows[3]["content_hash"]       # same text after NFC + collapsing
    assert rows[0]["content_hash"] != rows[1]["content_hash"]       # a moved field boundary is a different record
    assert all(len(h) == 16 for h in res.kept["content_hash"])


def test_placeholders_are_filled_where_given_and_otherwise_left_and_counted():
    rows = records(
        {"output": "I am {{name}}, made by {{ author }}. It costs $5 at {{name}}."},
        {"instruction": "Who made you, {{name}}?", "history": [{"role": "user", "content": "Hi {{author}}"}]},
        {"output": "No placeholder, only {single} braces and {{ not-a-name }}."},
    )
    res = clean(rows, CleanConfig(fill={"name": "Forge $1"}))
    assert res.kept["output"].to_list() == ["I am Forge $1, made by {{ author }}. It costs $5 at Forge $1.", "Done.",
                                            "No placeholder, only {single} braces and {{ not-a-name }}."]
    assert res.kept["instruction"].to_list() == ["Do it.", "Who made you, Forge $1?", "Do it."]
    assert res.kept["history"][1].to_list() == [{"role": "user", "content": "Hi {{author}}"}]
    assert res.stats == {"placeholders": {"t": {"{{author}}": 2}}, "filled": {"t": {"{{name}}": 2}}}
    untouched = clean(rows, CleanConfig())
    assert untouched.kept["output"][0] == rows["output"][0]
    assert untouched.stats == {"placeholders": {"t": {"{{author}}": 2, "{{name}}": 2}}}


def test_fill_names_must_be_plain_names():
    with pytest.raises(ValueError, match="placeholder names must be plain names"):
        CleanConfig(fill={"first name": "Ada"})

"""Every kind of bad input: with `skip` it becomes a reject naming file, line and field; with `fail`
it raises InputError at the first bad record. Fixtures are small committed files in fixtures_bad/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.config.build import CleanConfig, InputSpec, OnError
from dataforge.data.clean import clean
from dataforge.data.collect import collect
from dataforge.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures_bad"


def collect_one(path: Path, on_error: OnError = OnError.skip):
    res = collect([InputSpec(path=str(path), source="s")], on_error)
    assert res.stats["read"]["s"] == res.kept.height + res.rejected.height
    return res


def rejects(res) -> list[tuple]:
    return [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()]


def fail_error(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        collect_one(path, OnError.fail)
    return info.value


def test_truncated_json_line_is_rejected_at_its_line():
    path = FIXTURES / "truncated.jsonl"
    res = collect_one(path)
    assert rejects(res) == [("parse_error", 3)]
    assert res.kept["origin_line"].to_list() == [1, 2, 4, 5]
    row = res.rejected.row(0, named=True)
    assert row["detail"].startswith(f"{path}:3: invalid JSON")
    assert row["record"] == path.read_text().splitlines()[2]
    err = fail_error(path)
    assert (err.file, err.line) == (str(path), 3)


def test_number_where_text_belongs_is_rejected_not_stringified():
    path = FIXTURES / "number_for_string.jsonl"
    res = collect_one(path)
    assert rejects(res) == [("wrong_type", 2)]
    assert "field 'output': expected a string, got number 42" in res.rejected["detail"][0]
    assert "42" not in res.kept["output"].to_list()
    err = fail_error(path)
    assert (err.line, err.field) == (2, "output")


def test_missing_and_null_fields_are_rejected_naming_the_field():
    path = FIXTURES / "missing_field.jsonl"
    res = collect_one(path)
    assert rejects(res) == [("missing_field", 4), ("missing_field", 5)]
    details = res.rejected["detail"].to_list()
    assert f"{path}:4: field 'output'" in details[0]
    assert f"{path}:5: field 'instruction'" in details[1]
    err = fail_error(path)
    assert (err.line, err.field) == (4, "output")


def test_utf8_bom_is_stripped_and_the_file_is_fine(tmp_path):
    path = FIXTURES / "bom.jsonl"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(path.read_bytes()[3:])
    res = collect_one(path)
    assert res.rejected.height == 0
    assert res.kept.drop("id", "origin_file", "source").equals(collect_one(plain).kept.drop("id", "origin_file", "source"))
    assert not res.kept["instruction"][0].startswith("\ufeff")


def test_latin1_bytes_reject_only_their_line_as_bad_encoding():
    path = FIXTURES / "latin1.jsonl"
    res = collect_one(path)
    assert rejects(res) == [("bad_encoding", 2)]
    detail = res.rejected["detail"][0]
    assert detail.startswith(f"{path}:2:") and "0xe9" in detail and "UTF-8" in detail
    assert res.kept["origin_line"].to_list() == [1, 3, 4]
    assert fail_error(path).line == 2


def test_json_array_with_trailing_garbage_keeps_the_array_and_rejects_the_rest():
    path = FIXTURES / "trailing_garbage.json"
    text = path.read_text()
    garbage_line = text[: text.index("}garbage")].count("\n") + 1
    res = collect_one(path)
    assert res.kept["origin_line"].to_list() == [0, 1, 2]
    assert res.kept["instruction"].to_list() == [r["instruction"] for r in json.loads(text[: text.index("}garbage")])]
    assert rejects(res) == [("parse_error", 3)]
    assert f"line {garbage_line}, column 1" in res.rejected["detail"][0]
    err = fail_error(path)
    assert err.file == str(path) and f"line {garbage_line}" in str(err)


def test_broken_json_array_keeps_items_before_the_break(tmp_path):
    path = tmp_path / "broken.json"
    items = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]
    text = json.dumps(items, indent=1)
    cut = text.index('"q2"') + 3
    path.write_text(text[:cut])  # item 2 is cut off mid-string
    res = collect_one(path)
    assert res.kept["instruction"].to_list() == ["q0", "q1"]
    assert rejects(res) == [("parse_error", 2)]


def test_nan_in_csv_required_field_is_rejected_but_nan_input_is_empty_input():
    path = FIXTURES / "nan_cells.csv"
    res = collect_one(path)
    kept = {r["origin_line"]: r for r in res.kept.to_dicts()}
    assert sorted(kept) == [2, 3, 6]
    assert kept[3]["input"] == "" and kept[3]["output"] == "apple"
    assert rejects(res) == [("missing_field", 4), ("missing_field", 5)]
    assert all("field 'output': is empty (or NaN)" in d for d in res.rejected["detail"])
    err = fail_error(path)
    assert (err.line, err.field) == (4, "output")


def test_empty_file_is_a_visible_reject_or_an_error():
    path = FIXTURES / "empty.jsonl"
    res = collect_one(path)
    assert res.kept.height == 0
    assert rejects(res) == [("empty_file", 0)]
    assert "file is empty" in res.rejected["detail"][0]
    assert res.stats["read"]["s"] == 1
    err = fail_error(path)
    assert err.file == str(path) and "file is empty" in str(err)


def test_csv_with_only_a_header_counts_as_empty(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("instruction,input,output\n")
    assert rejects(collect_one(path)) == [("empty_file", 0)]


def test_missing_file_is_an_input_error_in_both_modes(tmp_path):
    path = tmp_path / "nope.jsonl"
    for mode in OnError:
        with pytest.raises(InputError, match="does not exist") as info:
            collect_one(path, mode)
        assert info.value.file == str(path)


def test_ten_megabyte_record_is_read_and_then_dropped_as_too_long(tmp_path):
    path = tmp_path / "big.jsonl"
    big = "word " * (2 * 1024 * 1024)  # 10 MiB
    rows = [{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Write a lot.", "output": big},
            {"instruction": "Say bye.", "output": "bye"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = collect_one(path)
    assert res.rejected.height == 0 and res.kept.height == 3
    assert res.kept["output"][1] == big
    cleaned = clean(res.kept, CleanConfig())
    assert [(r["reason"], r["origin_line"]) for r in cleaned.rejected.to_dicts()] == [("too_long", 2)]
    n = len(big.strip())
    assert f"field 'output' has {n} characters, more than output.max_chars = 20000" == cleaned.rejected["detail"][0]
    assert len(cleaned.rejected["record"][0]) <= 2000


def test_lone_surrogate_escape_is_rejected_as_invalid_unicode(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": "x", "output": "bad \\ud800 here"}\n')
    res = collect_one(path)
    assert rejects(res) == [("invalid_unicode", 2)]
    assert "field 'output'" in res.rejected["detail"][0] and "U+D800" in res.rejected["detail"][0]


def test_a_line_that_is_not_an_object_is_rejected_as_wrong_type(tmp_path):
    path = tmp_path / "array_line.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n["not", "a", "record"]\nnull\n')
    res = collect_one(path)
    assert rejects(res) == [("wrong_type", 2), ("wrong_type", 3)]
    assert "a record must be a JSON object, got array" in res.rejected["detail"][0]

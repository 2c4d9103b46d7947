"""Every kind of bad input: with `skip` it becomes a reject naming file, line and field; with `fail`
it raises InputError at the first bad record. Fixtures are small committed files in fixtures_bad/."""

from __future__ import annotations

import json
import os
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


# --- readers never merge, drop or misread records silently ------------------------------------------

def test_csv_unclosed_quote_rejects_its_line_and_reads_every_row_after_it():
    path = FIXTURES / "unclosed_quote.csv"
    lines = path.read_text().splitlines()
    res = collect_one(path)
    assert res.stats["read"]["s"] == len(lines) - 1 == 51
    assert rejects(res) == [("parse_error", 12)]
    assert "a quote opened on this line is probably never closed" in res.rejected["detail"][0]
    assert res.rejected["record"][0] == lines[11]
    kept = res.kept.sort("origin_line")
    assert kept["origin_line"].to_list() == [n for n in range(2, 53) if n != 12]
    expected = [line.rsplit(",", 1)[1] for i, line in enumerate(lines[1:], 2) if i != 12]
    assert kept["output"].to_list() == expected
    assert all("\n" not in o for o in kept["output"])
    err = fail_error(path)
    assert (err.file, err.line) == (str(path), 12)


def test_csv_quote_followed_by_text_is_rejected_not_read_as_joined_text(tmp_path):
    path = tmp_path / "glued.csv"
    path.write_text('instruction,input,output\nName a colour.,,blue\nName a fruit.,,"pear"s and plums\n'
                    'Name a tree.,,oak\n')
    res = collect_one(path)
    assert rejects(res) == [("parse_error", 3)]
    assert "a quoted cell is followed by more text" in res.rejected["detail"][0]
    assert res.kept["output"].to_list() == ["blue", "oak"]


def test_csv_literal_quotes_inside_unquoted_cells_are_kept_as_written(tmp_path):
    path = tmp_path / "inches.csv"
    path.write_text('instruction,input,output\nHow long is it?,,About 5" long\nAnd the box?,,A 12" by 8" box\n')
    res = collect_one(path)
    assert res.rejected.height == 0
    assert res.kept["output"].to_list() == ['About 5" long', 'A 12" by 8" box']


def _records(n: int) -> list[dict]:
    return [{"instruction": f"Name the capital of region {i}.", "input": "", "output": f"Town {i}, by the river."}
            for i in range(n)]


def test_json_array_broken_part_way_keeps_every_record_after_the_fault(tmp_path):
    items = _records(12)
    text = json.dumps(items, indent=2)
    at = text.index('"Town 4, by the river."')
    path = tmp_path / "broken.json"
    path.write_text(text[:at] + '"Town 4, by the river.' + text[at + len('"Town 4, by the river."'):])  # lost quote
    res = collect_one(path)
    assert res.kept["origin_line"].to_list() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert res.kept["instruction"].to_list() == [r["instruction"] for i, r in enumerate(items) if i != 4]
    assert rejects(res) == [("parse_error", 4)]
    broken = path.read_text()
    span = broken[broken.rindex("{", 0, broken.index("region 4.")):broken.rindex("}", 0, broken.index("region 5.")) + 1]
    detail = res.rejected["detail"][0]
    assert f"{len(span.encode())} bytes (lines" in detail and "were not read" in detail
    assert res.stats["inputs"][0]["unread_bytes"] == len(span.encode())


def test_minified_conversation_array_resyncs_on_records_not_on_their_turns(tmp_path):
    convs = [{"conversations": [{"from": "human", "value": f"Say {w}."}, {"from": "gpt", "value": f"{w.title()}!"}]}
             for w in ("hello", "goodbye", "thanks", "sorry", "welcome")]
    text = json.dumps(convs)
    path = tmp_path / "sharegpt.json"
    path.write_text(text.replace('"Say hello."', '"Say hello.', 1))  # the first record is broken
    res = collect_one(path)
    assert rejects(res) == [("parse_error", 0)]
    assert res.kept["instruction"].to_list() == ["Say goodbye.", "Say thanks.", "Say sorry.", "Say welcome."]


def test_json_array_cut_short_says_how_much_was_not_read(tmp_path):
    text = json.dumps(_records(6), indent=2)
    cut = text.index('"output": "Town 4')
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    res = collect_one(path)
    assert res.kept.height == 4
    assert rejects(res) == [("parse_error", 4)]
    lost = len(text[text.rindex("{", 0, cut):cut].rstrip(" \n,").encode())
    assert f"the remaining {lost} bytes" in res.rejected["detail"][0]
    assert res.stats["inputs"][0]["unread_bytes"] == lost


def test_json_file_holding_json_lines_with_an_unterminated_line_keeps_the_others(tmp_path):
    lines = [json.dumps(r) for r in _records(8)]
    lines[0] = lines[0][:-1]  # the first line lost its closing brace, so the file is no JSON document at all
    path = tmp_path / "lines.json"
    path.write_text("\n".join(lines) + "\n")
    res = collect_one(path)
    assert rejects(res) == [("parse_error", 1)]
    assert res.kept["origin_line"].to_list() == [2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("wrapped", [False, True])
def test_latin1_byte_in_a_json_document_rejects_only_its_record(tmp_path, wrapped):
    items = _records(6)
    items[3]["output"] = "Café 3, by the river."
    doc = {"version": 1, "data": items} if wrapped else items
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8").replace("é".encode(), b"\xe9"))
    res = collect_one(path)
    assert rejects(res) == [("bad_encoding", 3)]
    detail = res.rejected["detail"][0]
    assert "field 'output'" in detail and "0xe9" in detail
    assert "\\xe9" in res.rejected["record"][0]
    assert res.kept["origin_line"].to_list() == [0, 1, 2, 4, 5]
    assert res.kept["output"].to_list() == [items[i]["output"] for i in (0, 1, 2, 4, 5)]
    assert fail_error(path).line == 3


def test_deeply_nested_record_is_rejected_alone_in_json_lines_and_arrays(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    good = [json.dumps(r) for r in _records(2)]
    lines = tmp_path / "deep.jsonl"
    lines.write_text(f"{good[0]}\n{deep}\n{good[1]}\n")
    res = collect_one(lines)
    assert rejects(res) == [("too_deep", 2)]
    assert res.kept["origin_line"].to_list() == [1, 3]
    array = tmp_path / "deep.json"
    array.write_text(f"[{good[0]},\n{deep},\n{good[1]}]")
    res = collect_one(array)
    assert rejects(res) == [("too_deep", 1)]
    assert res.kept["instruction"].to_list() == [r["instruction"] for r in _records(2)]
    unclosed = tmp_path / "unclosed.jsonl"
    unclosed.write_text(f"{good[0]}\n" + "[" * 100_000 + "\n")
    assert rejects(collect_one(unclosed)) == [("too_deep", 2)]


@pytest.mark.parametrize("encoding, suffix", [
    ("utf-16", ".jsonl"), ("utf-16-le", ".jsonl"), ("utf-16-be", ".jsonl"), ("utf-32", ".jsonl"),
    ("utf-8-sig", ".jsonl"), ("utf-16", ".csv"), ("utf-16", ".json"),
])
def test_utf16_and_utf32_files_are_decoded_and_the_encoding_reported(tmp_path, encoding, suffix):
    items = [{"instruction": "Traduis : chat", "input": "", "output": "cat — 猫 🙂"}, *_records(3)]
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
    elif suffix == ".json":
        text = json.dumps(items, ensure_ascii=False, indent=2)
    else:
        text = "instruction,input,output\n" + "".join(f"{r['instruction']},,{r['output'].replace(',', ';')}\n"
                                                       for r in items)
    path = tmp_path / f"data{suffix}"
    path.write_bytes(text.encode(encoding))
    plain = tmp_path / f"plain{suffix}"
    plain.write_bytes(text.encode("utf-8"))
    res = collect_one(path)
    assert res.rejected.height == 0
    assert res.kept.drop("id", "origin_file").equals(collect_one(plain).kept.drop("id", "origin_file"))
    named = {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(encoding, encoding)
    assert res.stats["inputs"][0]["encoding"] == named


def test_undecodable_utf16_file_is_one_reject_saying_nothing_was_read(tmp_path):
    path = tmp_path / "bad16.jsonl"
    data = '{"instruction": "a", "output": "b"}\n'.encode("utf-16") + b"\x00\xdc"  # a lone low surrogate
    path.write_bytes(data)
    res = collect_one(path)
    assert rejects(res) == [("bad_encoding", 0)]
    assert f"none of its {len(data)} bytes were read" in res.rejected["detail"][0]


def test_a_file_the_os_cannot_read_is_an_input_error(tmp_path):
    mem = Path("/proc/self/mem")  # a regular file whose read fails with EIO, for root as for anyone
    if not mem.is_file():
        pytest.skip("needs Linux /proc")
    path = tmp_path / "records.jsonl"
    path.symlink_to(mem)
    for mode in OnError:
        with pytest.raises(InputError, match="cannot read this file") as info:
            collect_one(path, mode)
        assert info.value.file == str(path)


def test_a_pipe_is_not_mistaken_for_a_missing_file(tmp_path):
    path = tmp_path / "records.jsonl"
    os.mkfifo(path)
    with pytest.raises(InputError, match="neither a regular file nor a folder"):
        collect_one(path)


def test_adjacent_broken_records_are_one_reject_each_and_later_records_keep_their_index(tmp_path):
    text = json.dumps(_records(9), indent=2)
    for i in (3, 4):
        text = text.replace(f'"Town {i}, by the river."', f'"Town {i}, by the river.', 1)
    path = tmp_path / "two.json"
    path.write_text(text)
    res = collect_one(path)
    assert res.stats["read"]["s"] == 9
    assert rejects(res) == [("parse_error", 3), ("parse_error", 4)]
    assert res.kept.select("origin_line", "output").rows() == [(i, f"Town {i}, by the river.") for i in (0, 1, 2, 5, 6, 7, 8)]

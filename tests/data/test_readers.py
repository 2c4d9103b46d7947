"""Containers: JSON lines, JSON documents, CSV/TSV, Parquet, save_to_disk folders, self-instruct
folders, hub ids; origins (lines and rows); the fast route agreeing with the per-record route."""

from __future__ import annotations

import csv
import json
import random

import polars as pl
import pytest

from dataforge.config.build import InputSpec, OnError
from dataforge.data.collect import collect
from dataforge.data.io import readers
from dataforge.data.io.readers import read_input, read_records
from dataforge.errors import InputError

RECORDS = [
    {"instruction": "Translate to French: cat", "input": "", "output": "chat"},
    {"instruction": "Résumé en une phrase.", "input": "Le chat dort.\nIl fait beau.", "output": "Un chat dort au soleil."},
    {"instruction": "Quote this", "input": None, "output": 'He said "hi",\tthen left.', "system": "Be brief."},
    {"instruction": "Emoji?", "output": "🙂 — done", "category": "extra fields are ignored"},
]


def write_jsonl(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "".join(extra_lines))
    return path


def collect_one(path, on_error=OnError.skip, **spec):
    res = collect([InputSpec(path=str(path), source="s", **spec)], on_error)
    assert res.stats["read"]["s"] == res.kept.height + res.rejected.height
    return res


def texts(frame: pl.DataFrame) -> list[tuple]:
    return frame.select("origin_line", "system", "instruction", "input", "output").rows()


EXPECTED = [(i, r.get("system") or "", r["instruction"], r.get("input") or "", r["output"]) for i, r in enumerate(RECORDS)]


def test_jsonl_fast_route_reads_every_field_and_line(tmp_path):
    res = collect_one(write_jsonl(tmp_path / "a.jsonl", RECORDS))
    assert res.stats["inputs"][0]["vectorized"] == 4
    assert texts(res.kept) == [(i + 1, *rest) for i, *rest in EXPECTED]
    assert res.kept["id"].to_list() == [f"s:0:{i}" for i in range(1, 5)]
    assert res.kept["history"].to_list() == [[]] * 4


def test_a_bad_line_sends_the_file_record_by_record_with_the_same_result(tmp_path):
    fast = collect_one(write_jsonl(tmp_path / "a.jsonl", RECORDS))
    slow = collect_one(write_jsonl(tmp_path / "b.jsonl", RECORDS, extra_lines=["{broken\n"]))
    assert slow.stats["inputs"][0]["vectorized"] == 0
    assert texts(slow.kept) == texts(fast.kept)
    assert [(r["reason"], r["origin_line"]) for r in slow.rejected.to_dicts()] == [("parse_error", 5)]


def test_large_file_with_bad_lines_is_retried_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_RETRY_CHUNK", 300)  # a few records per chunk instead of 4 MiB
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(60)]
    lines = [json.dumps(r) + "\n" for r in rows]
    bad = {17: "{not json\n", 41: '{"instruction": "x", "output": 5}\n'}
    for i, line in bad.items():
        lines[i] = line
    path = tmp_path / "big.jsonl"
    path.write_text("".join(lines))
    res = collect_one(path)
    good = [i for i in range(60) if i not in bad]
    assert res.kept.select("origin_line", "instruction").rows() == [(i + 1, rows[i]["instruction"]) for i in good]
    assert [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()] == [("parse_error", 18), ("wrong_type", 42)]
    assert 0 < res.stats["inputs"][0]["vectorized"] < 58
    assert collect_one(path, limit=30).kept["origin_line"].to_list() == [i + 1 for i in good[:29]]


def varied_records(n: int, seed: int) -> list[dict]:
    """Records whose fields are present, absent, null, empty or non-ASCII, chosen by a seeded RNG."""
    rng = random.Random(seed)
    values = [None, "", " ", "plain", "naïve café", "多语言", "tab\there", "line\nbreak", '"quoted"', "🙂"]
    rows = []
    for _ in range(n):
        row = {}
        for key in ("instruction", "input", "output", "system", "note"):
            choice = rng.random()
            if choice < 0.85:
                row[key] = rng.choice(values[1:]) if choice < 0.8 else None
        row.setdefault("output", "")  # a row with no text field at all would send the file down the slow route
        rows.append(row)
    return rows


def test_vectorized_and_per_record_routes_agree_on_varied_records(tmp_path):
    rows = varied_records(400, seed=7)
    fast = collect_one(write_jsonl(tmp_path / "a.jsonl", rows))
    slow = collect_one(write_jsonl(tmp_path / "b.jsonl", rows, extra_lines=["{broken\n"]))
    assert fast.stats["inputs"][0]["vectorized"] == 400 and slow.stats["inputs"][0]["vectorized"] == 0
    assert fast.kept.drop("origin_file").equals(slow.kept.drop("origin_file"))
    fast_rejects = fast.rejected.select("reason", "origin_line", "record").rows()
    assert fast_rejects == slow.rejected.select("reason", "origin_line", "record").rows()[:-1]
    assert fast_rejects and fast.kept.height  # the sample holds both outcomes
    assert [d.split(": ", 1)[1] for d in fast.rejected["detail"]] == \
           [d.split(": ", 1)[1] for d in slow.rejected["detail"][:-1]]


def test_blank_lines_are_not_records_but_keep_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n   \n" + json.dumps(RECORDS[1]) + "\n")
    res = collect_one(path)
    assert res.kept["origin_line"].to_list() == [1, 4]
    assert res.stats["read"]["s"] == 2


def test_json_array_rows_count_from_zero(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(RECORDS, ensure_ascii=False, indent=2))
    assert texts(collect_one(path).kept) == EXPECTED


def test_json_object_with_one_list_of_records(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"version": 2, "data": RECORDS}, ensure_ascii=False))
    assert texts(collect_one(path).kept) == EXPECTED


def test_json_object_with_two_record_lists_is_ambiguous(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"train": RECORDS, "test": RECORDS}))
    with pytest.raises(InputError, match="exactly one list of record objects, found 2 \\(train, test\\)"):
        collect_one(path)


def test_json_file_holding_json_lines_is_read_as_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", RECORDS)
    res = collect_one(path)
    assert texts(res.kept) == [(i + 1, *rest) for i, *rest in EXPECTED]


def test_csv_origin_is_the_line_each_row_starts_on(tmp_path):
    rows = [["Write a haiku.", "", "line one\nline two\nline three"], ["Say hi.", "", "hi"],
            ["Explain:", "a\nb", "c"], ["Count.", "", "1, 2, 3"]]
    path = tmp_path / "multi.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerows(rows)
    starts, line = [], 2
    for row in rows:
        starts.append(line)
        line += 1 + sum(cell.count("\n") for cell in row)
    res = collect_one(path)
    assert res.kept["origin_line"].to_list() == starts
    assert res.kept["output"].to_list() == [r[2] for r in rows]
    assert res.stats["inputs"][0]["vectorized"] == 0


def test_csv_fast_route_numbers_rows_from_line_two_and_keeps_cells_as_text(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text('instruction,input,output\nHow many legs has a cat?,,4\n"Say ""hi"", twice",,hi hi\n')
    res = collect_one(path)
    assert res.stats["inputs"][0]["vectorized"] == 2
    assert res.kept.select("origin_line", "instruction", "output").rows() == [
        (2, "How many legs has a cat?", "4"), (3, 'Say "hi", twice', "hi hi")]


def test_csv_routes_agree_on_varied_records(tmp_path):
    rows = [[r.get(k) for k in ("instruction", "input", "output", "system")] for r in varied_records(300, seed=3)]
    rows = [[None if c is None else c.replace("\n", " ") for c in row] for row in rows]
    rows[5], rows[9] = ["Q5", "", "NaN", None], ["Q9", "nan", "A9", None]  # lines 7 and 11

    def write(path, extra):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["instruction", "input", "output", "system"])
            w.writerows(rows + extra)
        return path

    fast = collect_one(write(tmp_path / "a.csv", []))
    slow = collect_one(write(tmp_path / "b.csv", [["multi\nline", "", "x", ""]]))
    assert fast.stats["inputs"][0]["vectorized"] == 300 and slow.stats["inputs"][0]["vectorized"] == 0
    assert fast.kept.drop("origin_file").equals(slow.kept.drop("origin_file").head(-1))
    assert fast.rejected.select("reason", "origin_line", "record").equals(
        slow.rejected.select("reason", "origin_line", "record"))
    nan_output = fast.rejected.filter(pl.col("origin_line") == 7).row(0, named=True)
    assert nan_output["reason"] == "missing_field" and "field 'output': is empty (or NaN)" in nan_output["detail"]
    assert fast.kept.filter(pl.col("origin_line") == 11).select("instruction", "input", "output").rows() == [("Q9", "", "A9")]


def test_csv_row_with_wrong_field_count_is_a_parse_error(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("instruction,input,output\na,,b\nc,d\ne,,f\n")
    res = collect_one(path)
    assert res.kept["origin_line"].to_list() == [2, 4]
    rej = res.rejected.row(0, named=True)
    assert (rej["reason"], rej["origin_line"]) == ("parse_error", 3)
    assert "expected 3 fields (as in the header), got 2" in rej["detail"]


def test_csv_duplicate_header_is_an_input_error(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("instruction,output,output\na,b,c\n")
    with pytest.raises(InputError, match="'output' more than once"):
        collect_one(path)


def test_tsv_is_read_with_tabs(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("instruction\tinput\toutput\nSay hi.\t\thi, there\n")
    assert collect_one(path).kept.select("instruction", "output").rows() == [("Say hi.", "hi, there")]


def test_parquet_rows_count_from_zero_and_wrong_types_are_rejected(tmp_path):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"instruction": ["a", "b", None], "output": ["x", "y", "z"]}).write_parquet(good)
    res = collect_one(good)
    assert res.kept.select("origin_line", "instruction").rows() == [(0, "a"), (1, "b")]
    assert [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()] == [("missing_field", 2)]
    typed = tmp_path / "typed.parquet"
    pl.DataFrame({"instruction": ["a", "b"], "output": [1, 2]}).write_parquet(typed)
    res = collect_one(typed)
    assert res.kept.height == 0
    assert all("field 'output': expected a string, got number" in d for d in res.rejected["detail"])


def test_corrupt_parquet_is_one_parse_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    res = collect_one(path)
    assert [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()] == [("parse_error", 0)]
    assert res.rejected["detail"][0].startswith(f"{path}: not a readable Parquet file")


def test_unparseable_json_object_is_one_whole_file_reject(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"data": [\n  {"instruction": "a", "output": "b"},\n  {"instruction": ')
    res = collect_one(path)
    assert [(r["reason"], r["origin_line"]) for r in res.rejected.to_dicts()] == [("parse_error", 0)]
    assert res.rejected["detail"][0].startswith(f"{path}: invalid JSON at line 3, column 19")
    with pytest.raises(InputError, match="invalid JSON at line 3") as info:
        collect_one(path, OnError.fail)
    assert (info.value.file, info.value.line) == (str(path), None)


def test_save_to_disk_dataset_and_datasetdict_split(tmp_path):
    import datasets

    single = tmp_path / "single"
    datasets.Dataset.from_list(RECORDS[:2]).save_to_disk(str(single))
    assert collect_one(single).kept["instruction"].to_list() == [r["instruction"] for r in RECORDS[:2]]

    multi = tmp_path / "multi"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(RECORDS[:2]),
        "test": datasets.Dataset.from_list([RECORDS[3]]),
    }).save_to_disk(str(multi))
    res = collect_one(multi, split="test")
    assert res.kept.select("origin_line", "instruction").rows() == [(0, RECORDS[3]["instruction"])]
    assert res.kept["origin_file"][0] == f"{multi}[test]"
    with pytest.raises(InputError, match="no split 'validation' here; the splits are: train, test") as info:
        collect_one(multi, split="validation")
    assert info.value.field == "split"


def test_self_instruct_folder_is_read_as_alpaca(tmp_path):
    folder = tmp_path / "si"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"kind": "self-instruct"}))
    write_jsonl(folder / "tasks.alpaca.jsonl", RECORDS[:2])
    (folder / "pool.jsonl").write_text('{"instruction": "not a task"}\n')
    res = collect_one(folder)
    assert res.kept["instruction"].to_list() == [r["instruction"] for r in RECORDS[:2]]
    assert res.kept["origin_file"][0] == str(folder / "tasks.alpaca.jsonl")


def test_folder_of_unknown_kind_is_an_input_error(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="neither a datasets.save_to_disk folder"):
        collect_one(tmp_path)


def test_hub_id_while_offline_is_a_clear_input_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError, match="the hub is unreachable") as info:
        collect_one("dataforge-test/no-such-dataset")
    assert info.value.file == "dataforge-test/no-such-dataset"


def test_unsupported_suffix_names_the_supported_ones(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"\x00")
    with pytest.raises(InputError, match="unsupported file type '.xlsx'; expected one of .jsonl"):
        collect_one(path)


def test_relative_paths_resolve_against_base_dir(tmp_path):
    write_jsonl(tmp_path / "rel.jsonl", RECORDS[:1])
    res = collect([InputSpec(path="rel.jsonl", source="s")], OnError.skip, base_dir=tmp_path)
    assert res.kept["origin_file"][0] == str(tmp_path / "rel.jsonl")


def test_limit_reads_at_most_n_records(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", RECORDS)
    bad = write_jsonl(tmp_path / "b.jsonl", RECORDS, extra_lines=["{broken\n"])
    assert collect_one(path, limit=2).kept["origin_line"].to_list() == [1, 2]
    assert collect_one(bad, limit=2).kept["origin_line"].to_list() == [1, 2]
    assert read_input(path, limit=3, text_fields=["instruction"]).count == 3


def test_read_records_returns_raw_dicts_and_raises_on_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", RECORDS)
    assert read_records(path) == RECORDS
    bad = write_jsonl(tmp_path / "b.jsonl", RECORDS[:2], extra_lines=["{broken\n"])
    with pytest.raises(InputError) as info:
        read_records(bad)
    assert (info.value.file, info.value.line) == (str(bad), 3)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        read_records(empty)

import json
from pathlib import Path

import pytest

from dataforge.errors import InputError
from dataforge.selfinstruct.seeds import load_seed_tasks

FIXTURES = Path(__file__).parent / "fixtures"


def test_self_instruct_format_loads_every_field():
    seeds = load_seed_tasks(FIXTURES / "seed_tasks.jsonl")
    rows = [json.loads(line) for line in (FIXTURES / "seed_tasks.jsonl").read_text().splitlines()]
    assert [s.instruction for s in seeds] == [r["instruction"] for r in rows]
    assert [s.is_classification for s in seeds] == [r["is_classification"] for r in rows]
    assert seeds[1].instances == ((rows[1]["instances"][0]["input"], rows[1]["instances"][0]["output"]),)


def test_alpaca_array_loads_with_empty_inputs():
    seeds = load_seed_tasks(FIXTURES / "seed_tasks.alpaca.json")
    assert len(seeds) == 4 and seeds[0].instances == (("", "The Patient Loaf"),)
    assert not any(s.is_classification for s in seeds)


def _write(tmp_path, lines):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("record, field", [
    ({"instruction": "Do it.", "instances": [{"input": "", "output": "x"}]}, "is_classification"),
    ({"instruction": "Do it.", "is_classification": False}, "instances"),
    ({"instances": [{"input": "", "output": "x"}], "is_classification": False}, "instruction"),
    ({"instruction": "Do it.", "instances": [], "is_classification": False}, "instances"),
    ({"instruction": "Do it.", "instances": [{"input": ""}], "is_classification": False}, "output"),
    ({"instruction": "Do it.", "instances": [{"input": "", "output": "x"}], "is_classification": "no"},
     "is_classification"),
    ({"instruction": 3, "output": "x"}, "instruction"),
    ({"instruction": "Do it.", "answer": "x"}, "output"),
])
def test_bad_record_names_file_line_and_field(tmp_path, record, field):
    good = json.dumps({"instruction": "Fine.", "input": "", "output": "ok"})
    path = _write(tmp_path, [good, json.dumps(record)])
    with pytest.raises(InputError) as err:
        load_seed_tasks(path)
    assert err.value.file == str(path) and err.value.line == 2 and err.value.field == field
    assert f"{path}:2: field '{field}'" in str(err.value)


def test_empty_seed_file_is_refused(tmp_path):
    path = _write(tmp_path, ["", "  "])
    with pytest.raises(InputError, match="no seed tasks"):
        load_seed_tasks(path)


def test_broken_json_line_is_refused_with_its_line(tmp_path):
    path = _write(tmp_path, [json.dumps({"instruction": "Fine.", "output": "ok"}), "{not json"])
    with pytest.raises(InputError) as err:
        load_seed_tasks(path)
    assert err.value.line == 2


def test_missing_seed_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")

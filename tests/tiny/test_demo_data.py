import itertools
import json
import re

import pytest

from dataforge.paths import DEMO_DATA_DIR
from dataforge.tiny import demo_data
from dataforge.tiny.corpus import CORPUS_FILE, read_corpus, split_corpus

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _words3(text):
    w = text.lower().split()
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def _sim(a, b):
    return len(a & b) / len(a | b)


def _fields(rec):
    """(instructions, outputs, all text) of a record in either format."""
    if "conversations" in rec:
        turns = rec["conversations"]
        return ([t["value"] for t in turns if t["from"] == "human"], [t["value"] for t in turns if t["from"] == "gpt"],
                " ".join(t["value"] for t in turns))
    return [rec["instruction"]], [rec["output"]], " ".join((rec["instruction"], rec["input"], rec["output"]))


@pytest.fixture(scope="module")
def planted():
    return json.loads((DEMO_DATA_DIR / "planted.json").read_text())["files"]


def _lines(name):
    return (DEMO_DATA_DIR / name).read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("name", ["domain.jsonl", "general.jsonl"])
def test_planted_problems_are_where_planted_json_says(name, planted):
    lines = _lines(name)
    entry = planted[name]
    assert len(lines) == entry["lines"]
    found = {k: [] for k in ("truncated_json", "exact_duplicate", "empty_output", "blank_instruction",
                             "control_character", "overlong")}
    seen = set()
    for n, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            found["truncated_json"].append(n)
            continue
        key = json.dumps(rec, sort_keys=True)
        if key in seen:
            found["exact_duplicate"].append(n)
        seen.add(key)
        instructions, outputs, text = _fields(rec)
        if any(o == "" for o in outputs):
            found["empty_output"].append(n)
        if any(i != "" and not i.strip() for i in instructions):
            found["blank_instruction"].append(n)
        if CONTROL.search(text):
            found["control_character"].append(n)
        if len(text) > 20_000:
            found["overlong"].append(n)
    expected = entry["planted"]
    for kind, where in found.items():
        assert where == expected.get(kind, []), kind


@pytest.mark.parametrize("name", ["domain.jsonl", "general.jsonl"])
def test_only_planted_near_duplicates_cross_the_dedupe_threshold(name, planted):
    lines = _lines(name)
    expected = planted[name]["planted"]
    skip = {n for kind, where in expected.items() if kind != "near_duplicate" for n in where}
    rows = {n: _words3(_fields(json.loads(lines[n - 1]))[2]) for n in range(1, len(lines) + 1) if n not in skip}
    near = set(expected["near_duplicate"])
    distinct = [n for n in rows if n not in near]
    assert len(distinct) == planted[name]["distinct_records"]
    assert max(_sim(rows[a], rows[b]) for a, b in itertools.combinations(distinct, 2)) < 0.65
    for n in near:
        best = max(_sim(rows[n], rows[m]) for m in distinct if m < n)
        assert best >= 0.85, n


def test_readme_documents_the_planted_counts(planted):
    readme = (DEMO_DATA_DIR / "README.md").read_text()
    table = {k: (int(a), int(b)) for k, a, b in re.findall(r"^\|\s*`?(\w+)`?\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", readme, re.M)}
    domain, general = planted["domain.jsonl"]["planted"], planted["general.jsonl"]["planted"]
    for kind in set(domain) | set(general):
        assert table[kind] == (len(domain.get(kind, [])), len(general.get(kind, []))), kind


def test_general_answers_come_from_the_corpus_train_part_only():
    train, heldout = split_corpus(read_corpus(CORPUS_FILE))
    train_text = "\f".join(d.text for d in train)
    heldout_text = "\f".join(d.text for d in heldout)
    answers = []
    for line in _lines("general.jsonl"):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        answers += [a for a in _fields(rec)[1] if a and len(a) < 2_000 and not CONTROL.search(a)]
    exact = [a for a in answers if a in train_text]
    assert len(exact) >= 0.9 * len(answers)  # the rest are the one-word-edited near duplicates
    assert not [a for a in answers if a in heldout_text]


def test_domain_records_follow_the_house_style():
    rows = [json.loads(x) for x in _lines("domain.jsonl")]
    good = [r for r in rows if r["output"].strip() and len(r["output"]) < 20_000]
    assert all(r["output"].startswith("Diagnosis: ") and "\n1. " in r["output"] for r in good)
    with_input = sum(bool(r["input"]) for r in good)
    assert 0.2 < with_input / len(good) < 0.6


def test_seed_tasks_have_the_self_instruct_shape():
    tasks = [json.loads(x) for x in _lines("seed_tasks.jsonl")]
    assert 18 <= len(tasks) <= 25
    assert len({t["id"] for t in tasks}) == len(tasks)
    assert 3 <= sum(t["is_classification"] for t in tasks) <= 4
    for t in tasks:
        assert set(t) == {"id", "name", "instruction", "instances", "is_classification"}
        assert t["instruction"].strip() and t["instances"]
        assert all(set(i) == {"input", "output"} and i["output"].strip() for i in t["instances"])


def test_committed_demo_files_are_what_the_generator_writes(tmp_path):
    demo_data.write_demo_data(tmp_path)
    for name in ("domain.jsonl", "general.jsonl", "seed_tasks.jsonl", "planted.json"):
        assert (tmp_path / name).read_bytes() == (DEMO_DATA_DIR / name).read_bytes(), name

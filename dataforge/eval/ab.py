"""Human A/B evaluation: a blind side-by-side sheet out, win rates with intervals back in.

Automatic metrics reward overlap with one reference; people judge whether an answer is better.
The sheet hides which model wrote which output: sides are flipped by a seeded coin and the rows
shuffled, and the unblinding key is written to a separate file that raters never see. Ratings come
back as the same CSV with the `preference` column filled in (1, 2, tie or both_bad); several raters' files
can be imported together, and the interval resamples *items* (with all their ratings), since
ratings of the same item are not independent.

Model outputs are untrusted text in a file people open in a spreadsheet: a cell starting with `=`,
`+`, `-`, `@`, a tab or a carriage return would run as a formula (CSV injection, OWASP), so such cells
get a leading `'`; `read_sheet` removes it again, so text round-trips exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dataforge.errors import InputError
from dataforge.eval.aggregate import bootstrap_weights, interval
from dataforge.eval.compare import check_same_suite, pair_rows
from dataforge.eval.results import load_results, prompt_text
from dataforge.util.atomic import write_json, write_text
from dataforge.util.cells import escape_cell, normalize_rating, unescape_cell
from dataforge.util.fingerprint import sha256_file

SHEET_COLUMNS = ["item", "task", "prompt", "reference", "output_1", "output_2", "preference", "comment"]
PREFERENCES = ("1", "2", "tie", "both_bad")
# `both_bad` says neither model is better, as a tie does, so it scores as one in the win rate and is
# counted apart (`both_bad`); the preference build reads the same word (dataforge/data/preference.py).
SCORE = {"tuned": 1.0, "tie": 0.5, "both_bad": 0.5, "base": 0.0}
TEMPLATES = Path(__file__).resolve().parent / "report_templates"
def read_sheet(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(columns, [(line, row)]) of a sheet written by export_ab (or a rater's copy), cells unescaped."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        rows, line = [], 2
        for row in reader:
            rows.append((line, {k: unescape_cell(v) if isinstance(v, str) else v for k, v in row.items()}))
            line = reader.line_num + 1
        return list(reader.fieldnames or []), rows


@dataclass
class ABExport:
    sheet_csv: Path
    sheet_html: Path
    key: Path
    n_items: int


def export_ab(base_dir: str | Path, tuned_dir: str | Path, out_dir: str | Path, seed: int = 1234,
              tasks: list[str] | None = None, max_items: int | None = None, show_reference: bool = True) -> ABExport:
    """Write `ab_sheet.csv` (for ratings), `ab_sheet.html` (for reading) and `ab_key.json` (unblinding)."""
    base, tuned = load_results(base_dir), load_results(tuned_dir)
    check_same_suite([base, tuned])
    gen = [t for t in base.task_names if base.task(t)["type"] == "generation" and t in tuned.metrics]
    if tasks:
        unknown = [t for t in tasks if t not in gen]
        if unknown:
            raise InputError(f"not a generation task of both runs: {', '.join(unknown)} (have: {', '.join(gen)})")
        gen = [t for t in gen if t in tasks]
    pairs = []
    for task in gen:
        a, b, _, _ = pair_rows(base.rows(task), tuned.rows(task))
        pairs += [(task, ra, rb) for ra, rb in zip(a, b, strict=True)]
    if not pairs:
        raise InputError(f"no paired generation samples between {base.path} and {tuned.path}")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    if max_items is not None:
        pairs = pairs[:max_items]
    sheet, key_items = [], {}
    width = max(4, len(str(len(pairs))))
    for i, (task, ra, rb) in enumerate(pairs, 1):
        item = f"ab-{i:0{width}d}"
        tuned_first = rng.random() < 0.5
        first, second = (rb, ra) if tuned_first else (ra, rb)
        sheet.append({"item": item, "task": task, "prompt": prompt_text(ra.get("prompt")),
                      "reference": ra.get("reference", "") if show_reference else "",
                      "output_1": first.get("prediction", ""), "output_2": second.get("prediction", ""),
                      "preference": "", "comment": ""})
        key_items[item] = {"task": task, "sample_id": ra["sample_id"], "output_1": "tuned" if tuned_first else "base"}
    out = Path(out_dir)
    buf = io.StringIO()
    # Every cell quoted: a bare carriage return in an output would otherwise end the row on reading.
    writer = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows({k: escape_cell(v) for k, v in row.items()} for row in sheet)
    csv_path, html_path, key_path = out / "ab_sheet.csv", out / "ab_sheet.html", out / "ab_key.json"
    write_text(csv_path, "\ufeff" + buf.getvalue())  # the BOM makes spreadsheet programs read UTF-8
    write_text(html_path, _render_sheet(sheet, show_reference))
    write_json(key_path, {
        "kind": "ab-key", "seed": seed, "suite": base.manifest["suite"]["name"],
        "base": {"path": str(base.path), "label": base.label, "run_id": base.run_id},
        "tuned": {"path": str(tuned.path), "label": tuned.label, "run_id": tuned.run_id},
        "sheet_sha256": sha256_file(csv_path), "items": key_items,
    })
    return ABExport(csv_path, html_path, key_path, len(sheet))


def _render_sheet(sheet: list[dict], show_reference: bool) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("ab_sheet.html.j2").render(items=sheet, show_reference=show_reference,
                                                       preferences=PREFERENCES)


# ---------------------------------------------------------------------------------------------- import

@dataclass
class WinRate:
    n_items: int
    n_ratings: int
    tuned_wins: int
    base_wins: int
    ties: int
    both_bad: int              # rated both_bad: scored as ties, counted apart
    win_rate: float            # (tuned wins + (ties + both_bad) / 2) / ratings
    ci_low: float
    ci_high: float
    decisive_win_rate: float   # tuned wins / (wins + losses), ties left out
    decisive_ci_low: float     # Wilson score interval
    decisive_ci_high: float


@dataclass
class ABResult:
    base: str
    tuned: str
    raters: list[str]
    unrated: int
    overall: WinRate
    per_task: dict[str, WinRate] = field(default_factory=dict)
    agreement: float | None = None   # share of rater pairs that agree, on items rated by 2+ raters

    def to_dict(self) -> dict:
        return asdict(self)


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(outcomes: dict[str, list[str]], seed: int, n_boot: int = 1000) -> WinRate:
    """outcomes: item -> the outcome of each rating ('tuned', 'base', 'tie', 'both_bad')."""
    items = [o for o in outcomes.values() if o]
    flat = [x for o in items for x in o]
    wins, losses, ties, both_bad = (flat.count(k) for k in ("tuned", "base", "tie", "both_bad"))
    score = np.array([sum(SCORE[x] for x in o) for o in items])
    count = np.array([len(o) for o in items], dtype=float)
    rate = float(score.sum() / count.sum()) if len(flat) else float("nan")
    lo = hi = float("nan")
    if len(items) > 1:
        reps = np.concatenate([(w @ score) / (w @ count) for w in bootstrap_weights(len(items), seed, n_boot)])
        _, lo, hi = interval(reps)
    d_lo, d_hi = wilson(wins, wins + losses)
    return WinRate(len(items), len(flat), wins, losses, ties, both_bad, rate, lo, hi,
                   wins / (wins + losses) if wins + losses else float("nan"), d_lo, d_hi)


def _read_ratings(path: Path, key_items: dict[str, dict]) -> tuple[str, dict[str, str]]:
    """(rater, item -> preference) from one filled-in sheet."""
    if not path.is_file():
        raise InputError("ratings file does not exist", file=str(path))
    ratings: dict[str, str] = {}
    rater = path.stem
    columns, rows = read_sheet(path)
    missing = [c for c in ("item", "preference") if c not in columns]
    if missing:
        raise InputError(f"the sheet has no column {missing[0]!r} (columns: {columns})", file=str(path))
    for start, row in rows:
        item, pref = (row.get("item") or "").strip(), normalize_rating(row.get("preference") or "")
        if item not in key_items:
            raise InputError(f"unknown item {item!r}: this sheet does not belong to the given key",
                             file=str(path), line=start, field="item")
        if item in ratings:
            raise InputError(f"item {item!r} is rated twice in one file", file=str(path), line=start, field="item")
        if pref and pref not in PREFERENCES:
            raise InputError(f"{pref!r} is not a rating; use 1, 2, tie, both_bad, or leave it blank (unrated)",
                             file=str(path), line=start, field="preference")
        if row.get("rater"):
            rater = row["rater"].strip()
        ratings[item] = pref
    return rater, ratings


def import_ab(ratings_files: list[str | Path], key_file: str | Path, seed: int = 1234,
              n_boot: int = 1000) -> ABResult:
    """Unblind the ratings with the key and compute the tuned model's win rate over the base."""
    key_path = Path(key_file)
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("key file does not exist", file=str(key_path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(key_path), line=exc.lineno) from None
    if not isinstance(key, dict) or key.get("kind") != "ab-key":
        raise InputError("not an A/B key written by `dataforge export-ab`", file=str(key_path))
    items = key["items"]
    outcomes: dict[str, list[str]] = {item: [] for item in items}
    by_rater: dict[str, dict[str, str]] = {}
    unrated = 0
    for path in ratings_files:
        name, ratings = _read_ratings(Path(path), items)
        rater, k = name, 1
        while rater in by_rater:
            k += 1
            rater = f"{name} ({k})"
        by_rater[rater] = {}
        for item, pref in ratings.items():
            if not pref:
                unrated += 1
                continue
            first = items[item]["output_1"]
            other = "base" if first == "tuned" else "tuned"
            outcome = {"1": first, "2": other, "tie": "tie", "both_bad": "both_bad"}[pref]
            outcomes[item].append(outcome)
            by_rater[rater][item] = outcome
    tasks = sorted({v["task"] for v in items.values()})
    per_task = {t: win_rate({i: o for i, o in outcomes.items() if items[i]["task"] == t}, seed, n_boot) for t in tasks}
    return ABResult(key["base"]["label"], key["tuned"]["label"], list(by_rater), unrated,
                    win_rate(outcomes, seed, n_boot), per_task if len(tasks) > 1 else {}, _agreement(by_rater))


def _agreement(by_rater: dict[str, dict[str, str]]) -> float | None:
    raters = list(by_rater)
    agree = total = 0
    for i, a in enumerate(raters):
        for b in raters[i + 1:]:
            common = by_rater[a].keys() & by_rater[b].keys()
            agree += sum(by_rater[a][k] == by_rater[b][k] for k in common)
            total += len(common)
    return agree / total if total else None

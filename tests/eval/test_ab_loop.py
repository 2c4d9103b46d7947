"""The A/B loop closes: export-ab -> ratings -> import-ab -> build of pairs -> DPO -> eval and compare.

The two results folders are real model outputs scored with `dataforge score` (the eval fixtures),
the rest runs for real on the tiny model. One rater's rule, stated here and applied through the key:
of the 20 items, the first 12 prefer the tuned model's answer, then 2 prefer the base's, 2 are ties,
3 are `both_bad` and 1 is left blank. The build turns each "1"/"2" into one pair, drops ties and
blank rows with their reason, and (with `ab_both_bad: reference`) makes two pairs of each `both_bad`
row, the reference beating each output; `import-ab` reads the same sheet, `both_bad` included.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dataforge.config.base import validate_config
from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.eval.ab import export_ab, import_ab
from dataforge.eval.compare import compare_results
from dataforge.eval.config import EvalOptions
from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.predictions import score_predictions
from dataforge.eval.results import load_results
from dataforge.eval.runner import run_suite
from dataforge.eval.serving import load_targets
from dataforge.eval.tasks import load_suite
from dataforge.paths import evals_dir
from dataforge.train.config import TrainConfig
from dataforge.train.loop import train

FIXTURES = Path(__file__).parent / "fixtures"
RULE = ["tuned"] * 12 + ["base"] * 2 + ["tie"] * 2 + ["both_bad"] * 3 + [""]


def _rate(sheet: Path, key: Path, out: Path) -> None:
    """The rater's copy of the sheet, filled in by RULE in item order."""
    items = json.loads(key.read_text(encoding="utf-8"))["items"]
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, want in zip(sorted(rows, key=lambda r: r["item"]), RULE, strict=True):
        first = items[row["item"]]["output_1"]
        cell = {"tuned": "1" if first == "tuned" else "2", "base": "2" if first == "tuned" else "1",
                "both_bad": "Both bad"}.get(want, want)   # a rater's spelling: case and spaces do not matter
        row["preference"] = cell
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)


def test_rated_ab_sheet_becomes_pairs_a_dpo_tune_and_its_eval(tmp_path):
    # 1. two results folders with paired generation samples, and the blind sheet
    base = score_predictions(FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=tmp_path / "base")
    tuned = score_predictions(FIXTURES / "tuned_predictions.csv",
                              {"prompt": "question", "prediction": "answer", "reference": "gold"},
                              GenerationScoring(), out=tmp_path / "tuned")
    sheet = export_ab(base, tuned, tmp_path / "ab", seed=5)
    assert sheet.n_items == len(RULE)

    # 2. ratings, unblinded by import-ab: both_bad is a rating there too, scored as a tie
    rated = tmp_path / "ab" / "alice.csv"
    _rate(sheet.sheet_csv, sheet.key, rated)
    w = import_ab([rated], sheet.key, n_boot=200).overall
    assert (w.tuned_wins, w.base_wins, w.ties, w.both_bad, w.n_ratings) == (12, 2, 2, 3, 19)
    assert w.win_rate == pytest.approx((12 + (2 + 3) / 2) / 19)

    # 3. the preference build reads the rated sheet. Expected per row, worked out here from the sheet:
    # an empty output (one model answered nothing) -> rejected missing_field whatever the rating;
    # "1"/"2" -> 1 pair; both_bad -> 2 pairs (reference > each output); tie / blank -> rejected.
    expected = {"pairs": 0, "missing_field": 0, "tie": 0, "unrated": 0}
    with open(rated, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            rating = row["preference"].strip().lower()
            if not row["output_1"] or not row["output_2"]:
                expected["missing_field"] += 1
            elif rating in ("1", "2"):
                expected["pairs"] += 1
            elif rating == "both bad":
                expected["pairs"] += 2
            else:
                expected["tie" if rating == "tie" else "unrated"] += 1
    assert expected["pairs"] >= 15 and expected["tie"] == 2 and expected["unrated"] == 1
    cfg = validate_config(BuildConfig, {
        "task": "preference", "output": str(tmp_path / "build"), "seed": 3,
        "inputs": [{"path": str(rated), "format": "ab", "source": "ratings"}],
        "preference": {"ab_both_bad": "reference"},
        "split": {"train": 0.5, "val": 0.0, "test": 0.5},
        "tokenize": {"tokenizer": "tiny", "max_length": 256},
    }, "test build")
    build = run_build(cfg, show_progress=False)
    src = build.manifest["sources"]["ratings"]
    rejected = {k: v for k, v in expected.items() if k != "pairs" and v}
    assert src["kept"] == expected["pairs"] == sum(build.manifest["splits"].values())
    assert src["rejected_by_reason"] == rejected
    assert src["read"] == src["kept"] + src["rejected"] == expected["pairs"] + sum(rejected.values())
    assert build.manifest["preference"]["records"] == {"ratings": len(RULE)}

    # 4. DPO on the train split, a few steps
    result = train(TrainConfig(model="tiny", objective="dpo", data={"path": str(build.run_dir)},
                               output=str(tmp_path / "dpo"), seed=7, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                               train={"learning_rate": 1e-2, "max_steps": 2, "batch_size": 4, "warmup_steps": 0},
                               eval={"at_start": False}, checkpoint={"every_steps": 100}), show_progress=False)
    assert result.manifest["objective"] == "dpo" and result.manifest["total_steps"] == 2

    # 5. base and tune on the preference suite (held-out pairs of this build), then compare
    options = EvalOptions(batch_size=8, device="cpu", cache_dir=None, n_boot=200, limit=8, progress=False)
    targets, tok = load_targets("tiny", str(result.output / "adapter"), tmp_path / "eval" / "dpo",
                                tmp_path / "eval" / "base", options)
    run_suite(load_suite(evals_dir() / "preference.yaml", {"build": str(build.run_dir)}), targets, options, tok)
    dpo, ref = load_results(tmp_path / "eval" / "dpo"), load_results(tmp_path / "eval" / "base")
    held_out = build.manifest["splits"]["test"]
    assert dpo.task("preference_heldout")["n"] == min(8, held_out)
    assert ref.task("preference_heldout")["metrics"]["accuracy"]["value"] == 0.5
    comp = compare_results(ref, dpo, n_boot=200)
    assert {t.task for t in comp.tasks} == {"preference_heldout", "general_heldout_perplexity"}

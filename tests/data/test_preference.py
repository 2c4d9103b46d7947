"""Preference builds: every format accounted for, pairs expanded as the rule says, prompts kept together,
token ids as the tokenizer gives them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import polars as pl
import pytest

from dataforge.config.build import BuildConfig, InputSpec, OnError, PairRule, PreferenceConfig
from dataforge.data.collect import collect
from dataforge.data.pipeline import run_build
from dataforge.data.preference_stages import KTO_COLUMNS, PAIR_COLUMNS
from dataforge.errors import InputError
from dataforge.models import load_tokenizer
from dataforge.util.cells import escape_cell

FIXTURES = Path(__file__).parent / "fixtures_preference"
FILES = {"pairwise": "pairwise.jsonl", "ranked": "ranked.jsonl", "hh": "hh.jsonl", "kto": "kto.jsonl", "ab": "ab_sheet.csv"}
SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


def build(fmt: str, out: Path, path: Path | None = None, **extra) -> dict:
    cfg = BuildConfig(task="preference", inputs=[{"path": str(path or FIXTURES / FILES[fmt]), "format": fmt, "source": fmt}],
                      output=str(out), split=SPLIT, **extra)
    return run_build(cfg, show_progress=False).manifest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pref")
    out = {}
    for fmt in FILES:
        extra = {"preference": {"ab_both_bad": "reference"}} if fmt == "ab" else {}
        build(fmt, root / fmt, **extra)
        out[fmt] = root / fmt
    return out


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


# Counted by hand from the fixture files (the unit is the pair; KTO: the labelled completion).
EXPECTED = {
    # 13 lines, one pair each: an identical pair once cleaned, a missing `rejected`, a number as `chosen`,
    # a conversation that already ends on an assistant turn
    "pairwise": (13, {"identical_pair": 1, "missing_field": 1, "wrong_type": 1, "bad_turn_order": 1}),
    # 4 scored completions -> 6 pairs, 3 ranked -> 3, 3 with a tied rank -> 3 (1 tie), 2 -> 1,
    # one completion -> 1 rejected, a completion without score -> 1 rejected
    "ranked": (15, {"tie": 1, "too_few_completions": 1, "missing_field": 1}),
    # 9 lines: an identical answer, no Human/Assistant markers, a missing `rejected`, transcripts that
    # part before their last Assistant turn
    "hh": (9, {"identical_pair": 1, "no_shared_prompt": 2, "missing_field": 1}),
    # 7 lines: a string label and a missing label
    "kto": (7, {"wrong_type": 1, "missing_field": 1}),
    # 6 rows: 1, 2, tie, both_bad (reference rule: 2 pairs), unrated, 1
    "ab": (7, {"tie": 1, "unrated": 1}),
}


@pytest.mark.parametrize("fmt", list(FILES))
def test_every_format_accounts_for_each_pair(runs, fmt):
    m = manifest(runs[fmt])
    src = m["sources"][fmt]
    read, reasons = EXPECTED[fmt]
    assert m["task"] == "preference"
    assert src["read"] == read == src["kept"] + src["rejected"]
    assert src["rejected_by_reason"] == reasons
    assert src["kept"] == read - sum(reasons.values())
    assert sum(src["by_split"].values()) == src["kept"]
    rejects = [json.loads(x) for x in (runs[fmt] / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == src["rejected"]
    tokenized = datasets.load_from_disk(str(runs[fmt] / "tokenized"))
    assert sum(d.num_rows for d in tokenized.values()) == src["kept"]
    assert tokenized["train"].column_names == list(KTO_COLUMNS if fmt == "kto" else PAIR_COLUMNS)


def _ranked_sizes() -> list[tuple[int, list[float]]]:
    """(K, values where higher is better) for every ranked record with two or more usable completions."""
    out = []
    for line in (FIXTURES / "ranked.jsonl").read_text().splitlines():
        r = json.loads(line)
        comps = r["completions"]
        if "ranks" in r:
            keys = [-x for x in r["ranks"]]
        elif all(isinstance(c, dict) and ("score" in c or "rank" in c) for c in comps):
            keys = [c["score"] if "score" in c else -c["rank"] for c in comps]
        else:
            continue
        if len(comps) >= 2:
            out.append((len(comps), keys))
    return out


@pytest.mark.parametrize("rule", list(PairRule))
def test_ranked_records_expand_into_the_pairs_the_rule_draws(rule):
    spec = InputSpec(path=str(FIXTURES / "ranked.jsonl"), format="ranked", source="r")
    result = collect([spec], OnError.skip, preference=PreferenceConfig(pairs=rule))
    sizes = _ranked_sizes()
    if rule is PairRule.all:   # the ranks list [1, 2, 3]: every better one over every worse one
        french = result.kept.filter(pl.col("instruction").str.starts_with("Translate"))
        assert sorted(zip(french["output"], french["rejected"], strict=True)) == sorted(
            [("le marteau", "la marteau"), ("le marteau", "the hammer"), ("la marteau", "the hammer")])
    per_rule = {PairRule.all: lambda k: math.comb(k, 2), PairRule.best_vs_rest: lambda k: k - 1,
                PairRule.best_vs_worst: lambda k: 1}[rule]
    drawn = sum(per_rule(k) for k, _ in sizes)
    ties = sum(1 for _, keys in sizes for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] == keys[j])
    if rule is not PairRule.all:   # the tie in the fixture is between the 2nd and 3rd, never the best
        ties = 0
    assert result.kept.height == drawn - ties
    # + the record with one completion and the one with a completion missing its score: 1 read each, rejected once
    assert result.stats["read"]["r"] == drawn + 2
    assert result.stats["records"]["r"] == 6
    # chosen always ranks above rejected: the best-scored safety rule is chosen in every pair it is in
    best = "Wear eye protection whenever metal is hot or being struck."
    assert best not in result.kept["rejected"].to_list()


def test_hh_transcripts_split_at_the_shared_prompt():
    spec = InputSpec(path=str(FIXTURES / "hh.jsonl"), format="hh", source="hh")
    kept = collect([spec], OnError.skip).kept
    multi = kept.filter(pl.col("instruction") == "W1 in water.").row(0, named=True)
    assert [(t["role"], t["content"]) for t in multi["history"]] == [
        ("user", "My quench cracked the blade."), ("assistant", "Which steel and which quenchant?")]
    assert multi["output"] == "W1 in water often cracks; try brine at 50 °C or a fast oil."
    assert multi["rejected"] == "Water is fine, try again."
    # both answers start with "About 1", yet the split is at the Assistant marker, not mid-answer
    about = kept.filter(pl.col("output") == "About 1,100 °C.").row(0, named=True)
    assert about["rejected"] == "About a thousand degrees Fahrenheit, I think."
    assert about["instruction"] == "How hot should a forge be for mild steel?"
    # a transcript that starts with "Human:" itself, without the leading blank line
    hardy = kept.filter(pl.col("instruction") == "What is a hardy hole?").row(0, named=True)
    assert (hardy["output"], hardy["rejected"]) == ("The square hole in an anvil that holds tools.", "A hole.")


def test_pairwise_reads_alpaca_sharegpt_and_trl_conversational_records():
    spec = InputSpec(path=str(FIXTURES / "pairwise.jsonl"), format="pairwise", source="p")
    result = collect([spec], OnError.skip)
    rows = {r["instruction"]: r for r in result.kept.iter_rows(named=True)}
    medal = [r for r in result.kept.iter_rows(named=True) if r["instruction"] == "Yes, a sand mold. What's next?"]
    assert [t["content"] for t in medal[0]["history"]] == ["I want to cast a bronze medal.", "Do you have a mold yet?"]
    assert sorted(r["rejected"] for r in medal) == ["Pour it cold.", "Use chocolate instead."]
    horn = rows["What's the horn of an anvil for?"]
    assert (horn["system"], horn["output"], horn["rejected"]) == ("Answer briefly.", "Bending curves and drawing out stock.",
                                                                  "Making noise.")
    bad = result.rejected.filter(pl.col("reason") == "bad_turn_order").row(0, named=True)
    assert bad["origin_line"] == 13 and "messages" in bad["detail"]


def test_ab_sheet_ratings_become_pairs_by_the_documented_rule():
    spec = InputSpec(path=str(FIXTURES / "ab_sheet.csv"), format="ab", source="ab")
    dropped = collect([spec], OnError.skip)
    assert dropped.rejected["reason"].sort().to_list() == ["both_bad", "tie", "unrated"]
    pairs = {r["instruction"]: (r["output"], r["rejected"]) for r in dropped.kept.iter_rows(named=True)}
    assert pairs["What is scale?"] == ("The oxide crust that forms on hot steel.", "A thing for weighing.")
    # the sheet escaped a leading '+' against spreadsheet formulas; the pair holds the text as written
    assert pairs["What's a swage block?"][0] == "+shapes, a block with many holes and grooves"
    assert escape_cell(pairs["What's a swage block?"][0]).startswith("'")
    ref = collect([spec], OnError.skip, preference=PreferenceConfig(ab_both_bad="reference")).kept
    fuller = ref.filter(pl.col("instruction") == "What is a fuller?")
    assert fuller["output"].to_list() == ["A tool for spreading or grooving metal."] * 2
    assert sorted(fuller["rejected"].to_list()) == ["A cup.", "A fish."]


def test_token_ids_are_the_tokenizers_and_only_answers_are_trained(runs):
    tok = load_tokenizer("tiny")
    for split in ("train", "val", "test"):
        rows = {r["id"]: r for r in map(json.loads, (runs["pairwise"] / "splits" / f"{split}.jsonl").read_text().splitlines())}
        table = datasets.load_from_disk(str(runs["pairwise"] / "tokenized"))[split]
        assert set(table["id"]) == set(rows)
        for t in table:
            r = rows[t["id"]]
            prompt = tok(r["prompt"], add_special_tokens=True, split_special_tokens=True)["input_ids"]
            for side in ("chosen", "rejected"):
                answer = tok(r[side], add_special_tokens=False, split_special_tokens=True)["input_ids"]
                assert t[f"{side}_input_ids"] == prompt + answer + [tok.eos_token_id]
                assert t[f"{side}_labels"] == [-100] * len(prompt) + answer + [tok.eos_token_id]
            assert t["prompt_id"] == r["prompt_id"]


def test_kto_rows_keep_their_label(runs):
    table = datasets.load_from_disk(str(runs["kto"] / "tokenized"))
    rows = {r["id"]: r for s in ("train", "val", "test")
            for r in map(json.loads, (runs["kto"] / "splits" / f"{s}.jsonl").read_text().splitlines())}
    got = {t["id"]: t["kto_label"] for d in table.values() for t in d}
    assert got == {i: r["kto_label"] for i, r in rows.items()}
    assert sorted(got.values()) == [False, False, True, True, True]


def test_all_pairs_of_one_prompt_land_in_one_split_and_truncation_keeps_the_instruction(tmp_path):
    # 40 prompts with 3 pairs each: split pair by pair, some prompt would straddle two splits
    lines = [json.dumps({"instruction": f"Describe step {p} of forging hook number {p * 7}.", "input": "",
                         "chosen": f"Step {p}: heat the bar and bend it over the horn, answer {k}.",
                         "rejected": f"Wrong answer {k} for step {p}."}) for p in range(40) for k in range(3)]
    passage = " ".join(f"Line {i}: the smith checks the heat, turns the bar and strikes again." for i in range(40))
    instruction = "Which line first mentions the quench?"
    lines.append(json.dumps({"instruction": instruction, "input": passage, "chosen": "None of them does.",
                             "rejected": "Line 3, where the smith quenches the bar in brine."}))
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    m = build("pairwise", tmp_path / "run", path=path, dedupe={"near": {"enabled": False}}, tokenize={"max_length": 128})
    assert m["sources"]["pairwise"]["kept"] == 121
    frames = [pl.read_parquet(tmp_path / "run" / "splits" / f"{s}.parquet") for s in ("train", "val", "test")]
    frame = pl.concat(frames)
    hooks = frame.filter(pl.col("instruction") != instruction)
    assert hooks.group_by("prompt_id").agg(pl.col("split").n_unique().alias("n"))["n"].max() == 1
    assert hooks.group_by("prompt_id").len()["len"].to_list() == [3] * 40
    assert all(f.height for f in frames)

    tok = load_tokenizer("tiny")
    long_id = frame.filter(pl.col("instruction") == instruction)["id"][0]
    row = next(t for d in datasets.load_from_disk(str(tmp_path / "run" / "tokenized")).values() for t in d if t["id"] == long_id)
    wanted = tok(instruction, add_special_tokens=False)["input_ids"]
    for side in ("chosen", "rejected"):
        ids = row[f"{side}_input_ids"]
        assert len(ids) <= 128 and ids[-1] == tok.eos_token_id
        assert tok.decode(ids).count(instruction) == 1          # the passage was cut, the instruction kept
        assert len(wanted) and any(ids[i:i + len(wanted)] == wanted for i in range(len(ids)))
    counts = m["tokenize"]["counts"]
    assert sum(c["by_side"]["chosen"]["truncated"] + c["by_side"]["rejected"]["truncated"] for c in counts.values()) == 2


def test_contradicting_pairs_of_one_prompt_are_dropped_both(tmp_path):
    from dataforge.config.build import CleanConfig
    from dataforge.data.preference_stages import PairClean
    from dataforge.data.stage import BuildContext

    rows = [("Pick a quenchant.", "Oil.", "Water."), ("Pick a quenchant.", "Water.", "Oil."),
            ("Pick a quenchant.", "Oil.", "Brine."), ("Pick  a quenchant. ", "Water.", "Oil.")]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "chosen": c, "rejected": r}) + "\n" for i, c, r in rows))
    pairs = collect([InputSpec(path=str(path), format="pairwise", source="p")], OnError.skip).kept
    cfg = BuildConfig(task="preference", inputs=[{"path": str(path), "format": "pairwise"}], clean=CleanConfig())
    result = PairClean().run(pairs, BuildContext(cfg))
    # lines 1, 2 and 4 (the same prompt once whitespace is collapsed) contradict each other; line 3 stays
    assert result.kept["origin_line"].to_list() == [3]
    assert sorted(result.rejected["origin_line"].to_list()) == [1, 2, 4]
    assert set(result.rejected["reason"]) == {"conflicting_pair"}


def test_missing_field_names_file_line_and_field():
    spec = InputSpec(path=str(FIXTURES / "pairwise.jsonl"), format="pairwise", source="p")
    with pytest.raises(InputError) as err:
        collect([spec], OnError.fail)
    text = str(err.value)
    assert "pairwise.jsonl:10" in text and "rejected" in text


def test_ties_are_dropped_with_their_reason_even_when_bad_records_stop_the_build(tmp_path):
    lines = (FIXTURES / "ranked.jsonl").read_text().splitlines()[:4]   # the good records, one with a tied rank
    path = tmp_path / "ranked.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = collect([InputSpec(path=str(path), format="ranked", source="r")], OnError.fail)
    assert result.rejected["reason"].to_list() == ["tie"]
    assert result.rejected["id"].to_list() == ["r:0:3#1>2"]


def test_a_build_refuses_formats_of_the_other_task():
    with pytest.raises(ValueError, match="set `task: preference`"):
        BuildConfig(inputs=[{"path": "x.jsonl", "format": "pairwise"}])
    with pytest.raises(ValueError, match="a preference build reads"):
        BuildConfig(task="preference", inputs=[{"path": "x.jsonl", "format": "alpaca"}])
    with pytest.raises(ValueError, match="cannot be mixed"):
        BuildConfig(task="preference", inputs=[{"path": "x.jsonl", "format": "kto"}, {"path": "y.jsonl", "format": "hh"}])


def test_pair_rules_are_in_the_cache_key_and_a_rerun_is_reused(runs):
    from dataforge.data.pipeline import default_stages
    from dataforge.data.runner import FileHashes, plan
    from dataforge.data.stage import BuildContext

    def keys(rule: str) -> list[str]:
        cfg = BuildConfig(task="preference", inputs=[{"path": str(FIXTURES / FILES["ranked"]), "format": "ranked"}],
                          preference={"pairs": rule})
        return [p.key for p in plan(default_stages(cfg), BuildContext(cfg), FileHashes())]

    assert all(a != b for a, b in zip(keys("all"), keys("best_vs_worst"), strict=True))
    cfg = BuildConfig(task="preference", inputs=[{"path": str(FIXTURES / FILES["ranked"]), "format": "ranked", "source": "ranked"}],
                      output=str(runs["ranked"]), split=SPLIT)
    assert run_build(cfg, show_progress=False).reused == ["all"]


def test_inspect_shows_each_side_of_a_preference_build(runs):
    import io

    from rich.console import Console

    from dataforge.cli.inspect import inspect_run

    out = io.StringIO()
    inspect_run(runs["pairwise"], Console(file=out, width=200), samples=1, plain=True)
    text = out.getvalue()
    assert "train chosen" in text and "train rejected" in text and "samples from train chosen" in text

"""lm-eval interop on output written by the real lm-evaluation-harness (the `lm_eval_runs` fixture):
compare and the gate pair its samples, `score` re-scores its generations, and `eval --format lm-eval`
writes a results.json that lm-eval's own table reader accepts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataforge.errors import InputError
from dataforge.eval.aggregate import task_seed
from dataforge.eval.compare import GateConfig, check_gate, compare_results
from dataforge.eval.lm_eval_io import find_lm_eval_output, load_pair, score_lm_eval_samples
from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.results import load_results

FIXTURES = Path(__file__).parent / "fixtures_lm_eval"


def _only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(f"*/{pattern}")
    return found


def _raw(folder: Path, task: str) -> list[dict]:
    """lm-eval's samples file read with json alone."""
    with open(_only(folder, f"samples_{task}_*.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "DATAFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "dataforge", *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture(scope="module")
def ours(lm_eval_runs, tmp_path_factory) -> Path:
    """`dataforge eval` of the tiny model on the same questions and prompt, typed as an lm-eval command line."""
    home = tmp_path_factory.mktemp("home")
    out = home / "ours"
    proc = _cli("eval", str(FIXTURES / "suite.yaml"), "--model", "hf", "--model_args", "pretrained=tiny,dtype=float32",
                "--tasks", "df_mc", "--num_fewshot", "0", "--output_path", str(out), "--batch_size", "8",
                "--format", "lm-eval", "--no-history", "--no-cache", "-q", home=home)
    assert proc.returncode == 0, proc.stderr
    return out


def test_two_lm_eval_runs_pair_by_doc_hash_with_the_paired_bootstrap_of_their_own_samples(lm_eval_runs):
    base, tuned, notes, matched = load_pair(lm_eval_runs.base, lm_eval_runs.tuned, seed=7, n_boot=1000)
    comp = compare_results(base, tuned, seed=7, n_boot=1000)
    assert "doc_hash" in matched
    assert any("prompted differently" in n for n in notes)          # 0 shots against 2
    # independently: pair the raw lines on doc_hash, resample with the same seeded draws
    a = {r["doc_hash"]: r["acc"] for r in _raw(lm_eval_runs.base, "df_mc")}
    rows_b = _raw(lm_eval_runs.tuned, "df_mc")
    b = np.array([r["acc"] for r in rows_b])
    a = np.array([a[r["doc_hash"]] for r in rows_b])
    assert (a != b).any(), "the fixture's two runs should differ on some question"
    (t,) = [t for t in comp.tasks if t.task == "df_mc"]
    assert t.n_paired == 10 and t.n_base_only == t.n_tuned_only == 0
    weights = np.random.default_rng(task_seed(7, "df_mc")).multinomial(10, np.full(10, 0.1), size=1000)
    diff = weights @ (b - a) / 10
    lo, hi = np.quantile(diff, [0.025, 0.975])
    d = t.deltas["acc"]
    assert (d.base, d.tuned, d.delta) == pytest.approx((a.mean(), b.mean(), b.mean() - a.mean()))
    assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), abs=1e-12)
    assert d.p_value == pytest.approx(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))
    # the task value is lm-eval's own number
    results = json.loads(_only(lm_eval_runs.base, "results_*.json").read_text())
    assert d.base == pytest.approx(results["results"]["df_mc"]["acc,none"])
    assert {x.task for x in comp.tasks} == {"df_mc", "df_gen"}


def test_the_cli_compare_and_gate_read_lm_eval_folders_and_results_files(lm_eval_runs, tmp_path):
    results_file = _only(lm_eval_runs.base, "results_*.json")
    proc = _cli("compare", str(results_file), str(lm_eval_runs.tuned), "--json", str(tmp_path / "c.json"),
                "--seed", "7", "--min-domain-gain", "0", "--history-db", str(tmp_path / "h.sqlite"), home=tmp_path)
    assert proc.returncode == 1, proc.stderr                           # lm-eval tasks are general: no domain gain
    assert "min_domain_gain" in proc.stdout and "matched by lm-eval doc_hash" in proc.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    base, tuned, _, _ = load_pair(results_file, lm_eval_runs.tuned, seed=7)
    comp = compare_results(base, tuned, seed=7)
    for task in comp.tasks:
        for metric, d in task.deltas.items():
            got = data["tasks"][task.task]["metrics"][metric]
            assert (got["ci_low"], got["ci_high"]) == pytest.approx((d.ci_low, d.ci_high))
    assert check_gate(comp, GateConfig(max_regression=0.0, require_significance=False)) == [
        f"{t.task}/{t.primary} regressed {-t.primary_delta.relative:.1%} (> max_regression 0.0%): "
        f"{t.primary_delta.base:.4g} -> {t.primary_delta.tuned:.4g}, "
        f"CI [{t.primary_delta.ci_low:+.4g}, {t.primary_delta.ci_high:+.4g}]"
        for t in comp.tasks if t.primary_delta.relative < 0]


def test_a_dataforge_run_and_an_lm_eval_run_pair_on_the_prompt_and_agree_per_sample(lm_eval_runs, ours):
    base, tuned, _, matched = load_pair(lm_eval_runs.base, ours)
    comp = compare_results(base, tuned)
    (t,) = comp.tasks                                                   # df_gen is lm-eval's only
    assert matched.startswith("prompt text") and comp.only_base == ["df_gen"]
    assert t.n_paired == 10 and t.n_base_only == t.n_tuned_only == 0
    # same model, same prompts: every per-question acc equals lm-eval's, so every delta is exactly 0
    raw = {r["doc_id"]: r["acc"] for r in _raw(lm_eval_runs.base, "df_mc")}
    assert [r["metrics"]["acc"] for r in load_results(ours).rows("df_mc")] == [raw[i] for i in range(10)]
    assert all(d.delta == 0 and d.ci_low == 0 == d.ci_high for d in t.deltas.values())


def test_a_mixed_pair_prompted_differently_or_without_a_common_task_is_a_clear_error(lm_eval_runs, ours, tmp_path):
    base, tuned, _, _ = load_pair(ours, lm_eval_runs.tuned)             # the tuned run has 2 examples per question
    with pytest.raises(InputError, match="task 'df_mc': no sample of .* matches"):
        compare_results(base, tuned)
    gen_only = tmp_path / "gen_only"
    shutil.copytree(lm_eval_runs.base, gen_only)
    results_file = _only(gen_only, "results_*.json")
    data = json.loads(results_file.read_text())
    del data["configs"]["df_mc"], data["results"]["df_mc"]
    results_file.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"no task in common: .* has \['df_mc'\], the lm-eval run has \['df_gen'\]"):
        load_pair(ours, gen_only)


def test_missing_or_mismatched_lm_eval_samples_name_the_file_and_what_is_wrong(lm_eval_runs, tmp_path):
    no_samples = tmp_path / "no_samples"
    shutil.copytree(lm_eval_runs.base, no_samples)
    _only(no_samples, "samples_df_gen_*.jsonl").unlink()
    with pytest.raises(InputError, match=r"results_.*\.json: task 'df_gen' has no per-sample file "
                                         r"samples_df_gen_.*\.jsonl .*--log_samples"):
        find_lm_eval_output(no_samples)
    edited = tmp_path / "edited"
    shutil.copytree(lm_eval_runs.tuned, edited)
    samples = _only(edited, "samples_df_mc_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[3]["target_hash"] = "0" * 64
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"samples_df_mc_.*\.jsonl:\d+: task 'df_mc', doc_id \d+: the target "
                                         r"differs"):
        load_pair(lm_eval_runs.base, edited)
    both = tmp_path / "both"
    for run in (lm_eval_runs.base, lm_eval_runs.tuned):
        (model,) = run.iterdir()
        shutil.copytree(model, both / model.name)
    with pytest.raises(InputError, match="several models"):
        find_lm_eval_output(both)


def test_score_rescores_saved_lm_eval_generations_with_our_metrics(lm_eval_runs, tmp_path):
    from sacrebleu import corpus_chrf

    samples = _only(lm_eval_runs.base, "samples_df_gen_*.jsonl")
    out = score_lm_eval_samples(samples, GenerationScoring(), tag="general", out=tmp_path / "scored", seed=1,
                                n_boot=100, label=None, suite=None)
    res = load_results(out)
    raw = _raw(lm_eval_runs.base, "df_gen")
    rows = res.rows("df_gen")
    assert [r["prediction"] for r in rows] == [r["filtered_resps"][0] for r in raw]
    assert [r["reference"] for r in rows] == [r["target"] for r in raw]
    preds, refs = [r["filtered_resps"][0] for r in raw], [r["target"] for r in raw]
    assert res.value("df_gen", "chrf") == pytest.approx(corpus_chrf(preds, [refs]).score)
    assert res.value("df_gen", "exact_match") == pytest.approx(
        np.mean([" ".join(p.split()).casefold() == " ".join(t.split()).casefold() for p, t in zip(preds, refs, strict=True)]))
    # the re-scored run pairs with lm-eval's own on the prompt, its generations scored the same way
    base, tuned, _, matched = load_pair(out, lm_eval_runs.base, seed=1, n_boot=100)
    (t,) = compare_results(base, tuned, seed=1, n_boot=100).tasks
    assert matched.startswith("prompt text") and t.n_paired == 10 and set(t.deltas) >= {"rougeL", "chrf"}
    assert all(d.delta == 0 for d in t.deltas.values())
    with pytest.raises(InputError, match="holds loglikelihood scores, not generated text"):
        score_lm_eval_samples(_only(lm_eval_runs.base, "samples_df_mc_*.jsonl"), GenerationScoring(), tag="general",
                              out=tmp_path / "mc", seed=1, n_boot=100, label=None, suite=None)


def test_eval_format_lm_eval_writes_a_results_json_that_lm_eval_reads(lm_eval_runs, ours):
    from lm_eval.result_schema import EvalResults
    from lm_eval.utils import make_table

    ours_json = json.loads((ours / "results.json").read_text())
    theirs = json.loads(_only(lm_eval_runs.base, "results_*.json").read_text())
    assert set(ours_json) - {"dataforge_run_id"} <= set(EvalResults.__annotations__)
    for key in ("results", "versions", "n-shot", "configs", "config", "higher_is_better", "n-samples"):
        assert type(ours_json[key]) is type(theirs[key]), key
    # the same keys and values lm-eval wrote for the same model on the same task
    assert {k for k in ours_json["results"]["df_mc"] if "," in k} == {k for k in theirs["results"]["df_mc"] if "," in k}
    assert ours_json["results"]["df_mc"]["acc,none"] == pytest.approx(theirs["results"]["df_mc"]["acc,none"])
    assert ours_json["n-shot"]["df_mc"] == theirs["n-shot"]["df_mc"] == 0
    assert ours_json["config"]["model_args"].startswith("pretrained=tiny")
    table = make_table(ours_json)
    assert [line.split("|")[5].strip() for line in table.splitlines()[2:]] == ["acc", "acc_norm"]

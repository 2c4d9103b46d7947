"""The HTML + Markdown report, opened in headless Chromium to check that tables and plots render."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataforge.eval.metrics import GenerationScoring, score_generation
from dataforge.eval.predictions import read_predictions
from dataforge.eval.report import build_report, write_report
from dataforge.eval.results import TaskResult, write_results

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _mc(p, seed):
    rng = random.Random(seed)
    return [{"prompt": f"question {i}", "metrics": {"acc": float(rng.random() < p)}} for i in range(80)]


def _ppl(nll):
    return [{"text": f"doc {i}", "ll": -30 * (nll + 0.01 * (i % 5)), "n_tokens": 30, "n_words": 24, "n_bytes": 120,
             "metrics": {}} for i in range(30)]


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Base, a domain-only tune and a mixed tune: generation, multiple-choice and perplexity tasks."""
    root = tmp_path_factory.mktemp("report")
    scoring = GenerationScoring()
    base_gen = score_generation(read_predictions(FIXTURES / "base_predictions.jsonl"), scoring)
    tuned_gen = score_generation(read_predictions(FIXTURES / "tuned_predictions.csv",
                                                  {"prompt": "question", "prediction": "answer", "reference": "gold"}),
                                 scoring)
    mixed_gen = [b if i % 2 else t for i, (b, t) in enumerate(zip(base_gen, tuned_gen, strict=True))]
    paths = []
    for name, gen, acc, nll in (("base", base_gen, 0.6, 2.0), ("domain-only", tuned_gen, 0.45, 2.4),
                                ("mixed", mixed_gen, 0.58, 2.1)):
        tasks = {"support_qa": TaskResult("generation", "domain", gen, config=scoring.model_dump(mode="json")),
                 "general_mc": TaskResult("multiple_choice", "general", _mc(acc, seed=len(name))),
                 "general_text": TaskResult("perplexity", "general", _ppl(nll))}
        manifest = {"model": "tiny", "adapter": None if name == "base" else f"runs/{name}", "label": name,
                    "suite": {"name": "regression", "fingerprint": "f00d"}}
        paths.append(write_results(root / name, manifest, tasks, seed=0, n_boot=300))
    return root, paths


@pytest.fixture(scope="module")
def written(three_runs):
    root, paths = three_runs
    report = build_report(paths, seed=0, n_boot=300)
    html, md = write_report(report, root / "out" / "report.html")
    return report, html, md


def test_report_compares_every_tune_with_the_base(written):
    report, html, md = written
    assert report.labels == ["base", "domain-only", "mixed"]
    assert [c.tuned.label for c in report.comparisons] == ["domain-only", "mixed"]
    titles = [s.title for s in report.sections]
    assert titles[:4] == ["Runs", "Scores", "domain-only vs base", "mixed vs base"]
    assert {"Retention", "Error taxonomy"} <= set(titles)
    figures = {f.name for s in report.sections for f in s.figures}
    assert figures == {"task_scores", "perplexity", "retention", "taxonomy"}


def test_html_is_self_contained_and_markdown_has_the_same_tables(written):
    report, html, md = written
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text and 'src="http' not in text and "href=" not in text
    assert text.count('src="data:image/png;base64,') == 4
    markdown = md.read_text(encoding="utf-8")
    n_tables = sum(len(s.tables) for s in report.sections)
    assert text.count("<table>") == n_tables
    assert len(re.findall(r"^\| --- \|", markdown, flags=re.M)) == n_tables
    for s in report.sections:
        assert f"## {s.title}" in markdown and f"<h2>{s.title}</h2>" in text
    for name in ("task_scores", "perplexity", "retention", "taxonomy"):
        assert f"](report_files/{name}.png)" in markdown
        assert (md.parent / "report_files" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forgetting_and_taxonomy_numbers_in_the_report_match_the_comparison(written):
    report, html, md = written
    comp = report.comparisons[0]
    ppl = next(r for r in comp.forgetting.general if r.task == "general_text")
    markdown = md.read_text(encoding="utf-8")
    assert f"| general_text | bits_per_byte | {ppl.delta.base:.4g} | {ppl.delta.tuned:.4g} |" in markdown
    assert "| empty | 1 (5.0%) | 0 (0.0%) |" in markdown


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI: apt-get install -y chromium)")
def test_report_renders_tables_and_images_in_headless_chromium(written, tmp_path):
    report, html, md = written
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { document.body.dataset.probe = JSON.stringify({"
              "imgs: [...document.images].map(i => i.complete ? i.naturalWidth : 0),"
              "tables: [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().height),"
              "cells: document.querySelectorAll('td').length}); });</script></body>")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    match = re.search(r'data-probe="([^"]*)"', out.stdout)
    assert match, out.stderr[-2000:]
    data = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(data["imgs"]) == 4 and all(w > 200 for w in data["imgs"])
    n_tables = sum(len(s.tables) for s in report.sections)
    assert len(data["tables"]) == n_tables and all(h > 20 for h in data["tables"])
    assert data["cells"] > 100
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,1600", html.as_uri()],
                   capture_output=True, timeout=60)
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few kilobytes


def test_report_command_writes_both_files(three_runs, tmp_path):
    root, paths = three_runs
    out = tmp_path / "r.html"
    run = subprocess.run([sys.executable, "-m", "dataforge", "report", *map(str, paths), "-o", str(out),
                          "--n-boot", "200"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert out.is_file() and out.with_suffix(".md").is_file()
    one = subprocess.run([sys.executable, "-m", "dataforge", "report", str(paths[0]), "-o", str(out)],
                         capture_output=True, text=True)
    assert one.returncode == 2 and "at least one tuned" in one.stderr


def test_a_report_of_two_deployments_names_them_and_has_no_general_suite_change(tmp_path):
    rows = [{"prompt": f"q{i}", "metrics": {"acc": float(i % 3 == 0)}} for i in range(60)]
    better = [{"prompt": f"q{i}", "metrics": {"acc": float(i % 3 != 1)}} for i in range(60)]
    paths = [write_results(tmp_path / name, {"model": "tiny", "label": name, "suite": {"name": "s", "fingerprint": "f"}},
                           {"qa": TaskResult("multiple_choice", "domain", r)}, seed=0, n_boot=200)
             for name, r in (("server-a", rows), ("server-b", better))]
    report = build_report(paths, seed=0, n_boot=200)
    tables = [t for s in report.sections for t in s.tables]
    assert not any("General-suite" in t.title for t in tables)
    deltas = next(t for t in tables if t.title.startswith("Per-task deltas"))
    assert deltas.title == "Per-task deltas (server-b - server-a)"
    assert deltas.headers[3:5] == ["server-a", "server-b"]

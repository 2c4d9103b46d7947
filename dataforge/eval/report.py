"""The eval report: one self-contained HTML file (plots embedded) and the same content as Markdown.

The first results folder is the base; every other one is a tune compared with it (the quickstart
compares base, a domain-only tune and a mixed tune). The content is built once as sections of
tables and figures, and both templates render that same list, so the two files cannot drift.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataforge.eval.compare import (
    BackwardTransfer,
    Comparison,
    check_gate,
    compare_results,
    gate_from_manifest,
)
from dataforge.eval.contamination import Mode as ContaminationMode
from dataforge.eval.contamination import contamination_scores, overlapping_samples
from dataforge.eval.flips import flips
from dataforge.eval.multiple import Correction
from dataforge.eval.noise import noise_floor
from dataforge.eval.results import Results, load_results
from dataforge.eval.task_types import get_task_type
from dataforge.eval.taxonomy import LABELS, summarize_labels
from dataforge.util.atomic import write_bytes, write_text

TEMPLATES = Path(__file__).resolve().parent / "report_templates"
MARK = {"improved": "▲ improved", "regressed": "▼ regressed", "unchanged": "·"}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    runs: list[Results]
    labels: list[str]
    comparisons: list[Comparison]
    sections: list[Section]


def _num(v: float | None, signed: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _pct(v: float | None, signed: bool = True) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.1%}" if signed else f"{v:.1%}"


def _p(p: float, n_boot: int) -> str:
    return f"<{1 / n_boot:.0g}" if p == 0 else _num(p)


def _ci(lo: float, hi: float, signed: bool = True, pct: bool = False) -> str:
    f = _pct if pct else _num
    return f"[{f(lo, signed)}, {f(hi, signed)}]"


def unique_labels(runs: list[Results]) -> list[str]:
    """The runs' labels, numbered where two are the same, to name table columns."""
    labels: list[str] = []
    for run in runs:
        label, k = run.label, 1
        while label in labels:
            k += 1
            label = f"{run.label} ({k})"
        labels.append(label)
    return labels


# ---------------------------------------------------------------------------------------------- figures

def _pyplot():
    """pyplot on the Agg backend: reports are written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _bars(ax, values: list[float], lows: list[float], highs: list[float], labels: list[str]) -> None:
    x = np.arange(len(values))
    v = np.array(values, dtype=float)
    err = np.vstack([np.clip(v - np.array(lows, float), 0, None), np.clip(np.array(highs, float) - v, 0, None)])
    err = np.where(np.isfinite(err), err, 0)
    ax.bar(x, v, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(values))])
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)


def figure_task_scores(runs: list[Results], labels: list[str], tasks: list[str], metric_of: dict[str, str],
                       name: str, title: str) -> Figure:
    plt = _pyplot()
    cols = min(3, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        metric = metric_of[task]
        cells = [run.task(task)["metrics"][metric] for run in runs]
        _bars(ax, [c["value"] for c in cells], [c["ci_low"] for c in cells], [c["ci_high"] for c in cells], labels)
        arrow = "↑" if cells[0].get("higher_is_better", True) else "↓"
        ax.set_title(f"{task}\n{metric} {arrow}", fontsize=9)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return Figure(name, title + " (error bars: 95 % bootstrap CI)", _png(fig))


def figure_taxonomy(rates: dict[str, dict[str, float]], labels: list[str]) -> Figure:
    from matplotlib.ticker import PercentFormatter

    plt = _pyplot()
    y = np.arange(len(LABELS))
    height = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(LABELS) + 1.2))
    for i, label in enumerate(labels):
        ax.barh(y + i * height, [rates[label][lab] for lab in LABELS], height, label=label, color=f"C{i}")
    ax.set_yticks(y + height * (len(labels) - 1) / 2, LABELS, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of generation outputs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return Figure("taxonomy", "Error taxonomy: share of outputs with each label, all generation tasks", _png(fig))


def figure_retention(comparisons: list[Comparison], labels: list[str]) -> Figure | None:
    shared = [{r.task for r in comp.forgetting.general} for comp in comparisons]
    tasks = [r.task for r in comparisons[0].forgetting.general if all(r.task in s for s in shared)]
    if not tasks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(tasks) * len(comparisons)), 3.4))
    width = 0.8 / len(comparisons)
    x = np.arange(len(tasks))
    for i, comp in enumerate(comparisons):
        rows = {r.task: r for r in comp.forgetting.general}
        v = np.array([rows[t].retention for t in tasks])
        err = np.vstack([v - [rows[t].ci_low for t in tasks], [rows[t].ci_high for t in tasks] - v])
        ax.bar(x + i * width, v, width, yerr=np.where(np.isfinite(err), np.abs(err), 0), capsize=3,
               label=labels[i + 1], color=f"C{i + 1}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x + width * (len(comparisons) - 1) / 2, tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"retention (run / {labels[0]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return Figure("retention", "Retention on general tasks (primary metric; 1 = nothing forgotten; 95 % CI)", _png(fig))


# ---------------------------------------------------------------------------------------------- sections

def _runs_section(runs: list[Results], labels: list[str]) -> Section:
    rows = []
    for label, run in zip(labels, runs, strict=True):
        m = run.manifest
        rows.append([label, str(m.get("model")), str(m.get("adapter") or "-"), str(m.get("model_fingerprint") or "-")[:16],
                     str(m.get("created_at", "-")), str(run.path)])
    return Section("Runs", f"Suite '{runs[0].suite_name}' (fingerprint {runs[0].suite_fingerprint}). "
                           f"Every other run is compared with the first, {labels[0]}.",
                   [Table("Results folders", ["run", "model", "adapter", "fingerprint", "created", "folder"], rows)])


def _scores_section(runs: list[Results], labels: list[str]) -> Section:
    tasks = runs[0].task_names
    rows = []
    for task in tasks:
        entry = runs[0].task(task)
        primary = entry["primary_metric"]
        row = [task, entry["tag"], f"{primary} {'↑' if entry['metrics'][primary]['higher_is_better'] else '↓'}"]
        for run in runs:
            cell = run.task(task)["metrics"].get(primary) if task in run.metrics else None
            row.append("n/a" if cell is None else f"{_num(cell['value'])} {_ci(cell['ci_low'], cell['ci_high'], False)}")
        rows.append(row)
    section = Section("Scores", "Primary metric of each task with its 95 % bootstrap CI (seeded).",
                      [Table("Primary metrics", ["task", "tag", "metric", *labels], rows)])
    apart = {t: get_task_type(runs[0].task(t)["type"]).figure_metric for t in tasks}
    main = [t for t in tasks if apart[t] is None]
    if main:
        section.figures.append(figure_task_scores(
            runs, labels, main, {t: runs[0].task(t)["primary_metric"] for t in main}, "task_scores",
            "Per-task primary metric"))
    for metric in dict.fromkeys(m for m in apart.values() if m is not None):
        own = [t for t in tasks if apart[t] == metric]
        direction = "higher" if runs[0].task(own[0])["metrics"][metric]["higher_is_better"] else "lower"
        section.figures.append(figure_task_scores(runs, labels, own, dict.fromkeys(own, metric), metric,
                                                  f"{metric.replace('_', ' ').capitalize()} ({direction} is better)"))
    return section


def _comparison_section(comp: Comparison, base_label: str, label: str, noise: dict | None = None) -> Section:
    adjusted = comp.correction != "none"
    rows = []
    for t in comp.tasks:
        for d in t.deltas.values():
            rows.append([t.task, t.tag, d.metric + (" *" if d.metric == t.primary else ""), _num(d.base), _num(d.tuned),
                         _num(d.delta, True), _ci(d.ci_low, d.ci_high), _p(d.p_value, comp.n_boot),
                         *([_p(d.p_adjusted, comp.n_boot)] if adjusted else []),
                         *([_noise_cell(noise.get((t.task, d.metric)), d.delta)] if noise is not None else []),
                         MARK[d.verdict]])
    note = (f"Paired bootstrap over samples matched by prompt hash: {comp.n_boot} replicates, seed {comp.seed}, "
            f"{comp.confidence:.0%} CI. * primary metric.")
    if adjusted:
        note += (f" p adj: {comp.correction} correction over all {len(rows)} task x metric tests; the change column "
                 f"and the gate use it (significant when p adj <= {1 - comp.confidence:.2g}).")
    if noise is not None:
        note += (" noise: spread (max - min) of the base over its re-runs; ~ marks a delta within it.")
    unmatched = [f"{t.task}: {t.n_base_only} only in {base_label}, {t.n_tuned_only} only in {label}, left out"
                 for t in comp.tasks if t.n_base_only or t.n_tuned_only]
    if unmatched:
        note += " Unpaired samples: " + "; ".join(unmatched) + "."
    headers = ["task", "tag", "metric", base_label, label, "Δ", "95 % CI", "p", *(["p adj"] if adjusted else []),
               *(["noise"] if noise is not None else []), "change"]
    section = Section(f"{label} vs {base_label}", "", [Table(f"Per-task deltas ({label} - {base_label})",
                      headers, rows, note)])
    f = comp.forgetting
    if f.general:
        section.tables.append(Table(
            "Forgetting on general tasks", ["task", "metric", base_label, label, "Δ", "95 % CI", "retention", "95 % CI"],
            [[r.task, r.delta.metric, _num(r.delta.base), _num(r.delta.tuned), _num(r.delta.delta, True),
              _ci(r.delta.ci_low, r.delta.ci_high), _num(r.retention), _ci(r.ci_low, r.ci_high, False)]
             for r in f.general]))
    summary = []
    for name, s in (("general tasks (forgetting)", f.general_change), ("domain tasks (gain)", f.domain_gain)):
        if s is not None:
            summary.append([name, str(s.n_tasks), _pct(s.value), _ci(s.ci_low, s.ci_high, pct=True)])
    if f.general_change is not None:   # with no general task there is no suite-level change to set beside
        section.tables.append(Table("General-suite change beside domain gain", ["group", "tasks", "mean relative change",
                                    "95 % CI"], summary, "Relative change of each task's primary metric in its good "
                                    "direction (retention - 1), averaged over the group."))
    gate = gate_from_manifest(comp.base, {"correction": comp.correction})
    if gate.rules or gate.max_regression is not None or gate.max_forgetting is not None:
        failures = check_gate(comp, gate)
        section.tables.append(Table("Gate", ["result"], [[f] for f in failures] or [["passed"]]))
    return section


def _taxonomy_section(runs: list[Results], labels: list[str], comparisons: list[Comparison]) -> Section | None:
    gen = [t for t in runs[0].task_names if get_task_type(runs[0].task(t)["type"]).labelled]
    if not gen:
        return None
    summaries = {label: summarize_labels([r for t in gen if t in run.metrics for r in run.rows(t)], max_examples=2)
                 for label, run in zip(labels, runs, strict=True)}
    counts = Table("Labels, all generation tasks", ["label", *labels],
                   [[lab] + [f"{summaries[x][lab]['count']} ({_pct(summaries[x][lab]['rate'], False)})" for x in labels]
                    for lab in (*LABELS, "clean")])
    section = Section("Error taxonomy", "Every generation output is labelled by the rules in "
                      "dataforge/eval/taxonomy.py; an output can carry several labels.", [counts],
                      [figure_taxonomy({x: {lab: summaries[x][lab]["rate"] for lab in LABELS} for x in labels}, labels)])
    for comp, label in zip(comparisons, labels[1:], strict=True):
        rows = []
        for t in comp.tasks:
            for lab, c in (t.labels or {}).items():
                if c["base"] or c["tuned"]:
                    rows.append([t.task, lab, str(c["base"]), str(c["tuned"]), f"+{c['new']}", f"-{c['fixed']}"])
        section.tables.append(Table(f"Label changes, {labels[0]} → {label} (paired samples)",
                                    ["task", "label", labels[0], label, "new", "fixed"], rows))
    for x in labels:
        rows = [[lab, ex["prompt"][-160:], ex["prediction"][:240], ex["reference"][:160]]
                for lab in LABELS for ex in summaries[x][lab]["examples"]]
        if rows:
            section.tables.append(Table(f"Examples, {x}", ["label", "prompt (end)", "output", "reference"], rows))
    return section


def _noise_cell(spread, delta: float) -> str:
    if spread is None:
        return "n/a"
    return _num(spread.spread) + (" ~" if abs(delta) <= spread.spread else "")


def _flips_section(comp: Comparison, base_label: str, label: str, shown: int = 20) -> Section:
    """Per task: how many samples went right -> wrong and wrong -> right, and the first of each."""
    found = flips(comp.base, comp.tuned)
    counts = Table("Flips per task", ["task", "metric", "paired", "right → wrong", "wrong → right"],
                   [[f.task, f.metric, str(f.n_paired), str(len(f.broken)), str(len(f.fixed))] for f in found],
                   "Tasks whose primary metric is 0/1 per sample (accuracy, exact match); others have no flips.")
    section = Section(f"Flipped samples, {base_label} → {label}", "", [counts])
    for f in found:
        for name, items in (("right → wrong", f.broken), ("wrong → right", f.fixed)):
            if items:
                section.tables.append(Table(
                    f"{f.task}: {name} ({len(items)}{f', first {shown}' if len(items) > shown else ''})",
                    ["sample", "prompt (end)", base_label, label, "reference"],
                    [[x.sample_id, x.prompt[-160:], x.base_output[:160], x.tuned_output[:160], x.reference[:160]]
                     for x in items[:shown]]))
    return section


def _contamination_section(runs: list[Results], labels: list[str], texts: list[str], mode: ContaminationMode,
                           source: str, ngram: int, seed: int, n_boot: int, confidence: float) -> Section:
    rows = []
    for label, run in zip(labels, runs, strict=True):
        for r in contamination_scores(run, overlapping_samples(run, texts, ngram, mode), seed, n_boot, confidence):
            rows.append([r.task, label, r.metric, f"{_num(r.clean)} (n={r.n_clean})", _ci(*r.clean_ci, signed=False),
                         f"{_num(r.overlap)} (n={r.n_overlap})", _num(r.diff, True), _ci(*r.diff_ci),
                         "differs" if r.flagged else ""])
    return Section("Contamination", f"Items that overlap the build ({source}) scored apart from the clean ones. "
                   "A task is flagged when the bootstrap CI of overlap - clean excludes 0: its overall score then "
                   "misstates the clean items.",
                   [Table("Clean and overlapping items", ["task", "run", "metric", "clean", "95 % CI", "overlap",
                                                           "overlap - clean", "95 % CI", "flag"], rows)])


def _bwt_section(bwt: BackwardTransfer) -> Section:
    rows = [[r.task, r.learned_in, r.metric, _num(r.then), _num(r.now), _num(r.transfer, True)] for r in bwt.rows]
    note = f"BWT = {_num(bwt.bwt, True)} over {len(bwt.rows)} earlier domain task(s); runs: {' → '.join(bwt.runs)}."
    if bwt.skipped:
        note += f" Not evaluated by the last run: {', '.join(bwt.skipped)}."
    return Section("Backward transfer", "How successive tunes changed earlier domain tasks (Lopez-Paz & Ranzato, 2017).",
                   [Table("Backward transfer", ["task", "learned in", "metric", "then", "now", "transfer"], rows, note)])


def build_report(paths: list[str | Path], seed: int = 1234, n_boot: int = 1000, confidence: float = 0.95,
                 bwt: BackwardTransfer | None = None, title: str | None = None, correction: Correction | None = None,
                 noise: list[str | Path] = (), contamination: list[str] | None = None,
                 contamination_mode: ContaminationMode = "file", contamination_source: str = "",
                 ngram: int = 13) -> Report:
    """Load the folders (first = base), compare every tune with the base, and lay out the sections.
    `correction` overrides the suite gate's; `noise` are re-runs of the base (noise floor);
    `contamination` are a build's texts (`dataforge.eval.contamination.build_texts`) to split scores by."""
    if len(paths) < 2:
        raise ValueError("a report needs a base and at least one tuned results folder")
    runs = [load_results(p) for p in paths]
    labels = unique_labels(runs)
    method = correction or gate_from_manifest(runs[0]).correction
    comparisons = [compare_results(runs[0], run, seed, n_boot, confidence, method) for run in runs[1:]]
    spreads = noise_floor(runs[0], [load_results(p) for p in noise]) if noise else None
    sections = [_runs_section(runs, labels), _scores_section(runs, labels)]
    sections += [_comparison_section(c, labels[0], label, spreads)
                 for c, label in zip(comparisons, labels[1:], strict=True)]
    sections += [_flips_section(c, labels[0], label) for c, label in zip(comparisons, labels[1:], strict=True)]
    if contamination is not None:
        sections.append(_contamination_section(runs, labels, contamination, contamination_mode, contamination_source,
                                                ngram, seed, n_boot, confidence))
    retention = figure_retention(comparisons, labels)
    if retention is not None:
        sections.append(Section("Retention", "", [], [retention]))
    taxonomy = _taxonomy_section(runs, labels, comparisons)
    if taxonomy is not None:
        sections.append(taxonomy)
    if bwt is not None and bwt.rows:
        sections.append(_bwt_section(bwt))
    return Report(title or f"dataforge eval report: {' vs '.join(labels)}", runs, labels, comparisons, sections)


def _environment(autoescape: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")
    return env


def render_html(report: Report) -> str:
    return _environment(True).get_template("report.html.j2").render(report=report)


def render_markdown(report: Report, assets: str) -> str:
    return _environment(False).get_template("report.md.j2").render(report=report, assets=assets)


def write_report(report: Report, out: str | Path) -> tuple[Path, Path]:
    """`out` (.html, self-contained) and the same content as `out`.md, whose images are PNG files in
    `<out stem>_files/` beside it (Markdown viewers do not reliably show embedded images)."""
    html_path = Path(out)
    md_path = html_path.with_suffix(".md")
    assets = f"{html_path.stem}_files"
    for section in report.sections:
        for fig in section.figures:
            write_bytes(html_path.parent / assets / f"{fig.name}.png", fig.png)
    write_text(html_path, render_html(report))
    write_text(md_path, render_markdown(report, assets))
    return html_path, md_path

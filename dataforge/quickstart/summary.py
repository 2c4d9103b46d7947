"""The quickstart's closing figures: per tune, what it gained on the domain and lost on general text.

Everything here is read off the comparisons (`dataforge.eval.compare`) the report is built from, so
the printed table and the report cannot disagree. The claims the demo makes are checked against
those figures and printed as holding or not; nothing is assumed.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dataforge.eval.compare import Comparison, MetricDelta, Summary


def _delta(d: MetricDelta) -> dict:
    return {"metric": d.metric, "base": d.base, "tuned": d.tuned, "delta": d.delta, "ci_low": d.ci_low,
            "ci_high": d.ci_high, "verdict": d.verdict}


def _group(s: Summary | None) -> dict | None:
    return None if s is None else {"value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_tasks": s.n_tasks}


def tune_summary(comp: Comparison, gate_failures: list[str]) -> dict:
    """JSON-able figures of one tune against the base (quickstart.json keeps them for a rerun)."""
    domain = {t.task: _delta(t.primary_delta) for t in comp.tasks if t.tag == "domain"}
    perplexity = {}
    for t in comp.tasks:
        if t.tag == "general" and t.type == "perplexity" and "perplexity" in t.deltas:
            p = t.deltas["perplexity"]
            perplexity[t.task] = {**_delta(p), "relative": p.tuned / p.base - 1 if p.base else None,
                                  "primary": _delta(t.primary_delta)}
    taxonomy: dict[str, dict[str, int]] = {}
    for t in comp.tasks:
        for label, c in (t.labels or {}).items():
            agg = taxonomy.setdefault(label, {"base": 0, "tuned": 0, "new": 0, "fixed": 0})
            for k in agg:
                agg[k] += c[k]
    return {
        "domain": domain,
        "general_perplexity": perplexity,
        "domain_gain": _group(comp.forgetting.domain_gain),
        "general_change": _group(comp.forgetting.general_change),
        "taxonomy": {k: v for k, v in taxonomy.items() if v["base"] != v["tuned"] or v["new"] or v["fixed"]},
        "gate": {"passed": not gate_failures, "failures": gate_failures},
    }


def demo_claims(tunes: dict[str, dict]) -> list[dict]:
    """The two things the demo is meant to show, each judged on the measured figures."""
    claims = []
    alone, mixed = tunes.get("domain-only"), tunes.get("mixed")
    if alone and alone["domain"]:
        d = next(iter(alone["domain"].values()))
        claims.append({"claim": "the domain-only tune gains on the domain task",
                       "holds": d["ci_low"] > 0,
                       "evidence": f"{d['metric']} {d['base']:.3f} -> {d['tuned']:.3f}, "
                                   f"95% CI of the change [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"})
    if alone and mixed and alone["general_perplexity"] and mixed["general_perplexity"]:
        task = next(iter(alone["general_perplexity"]))
        a, m = alone["general_perplexity"][task], mixed["general_perplexity"].get(task)
        if m is not None:
            claims.append({"claim": "it forgets more on general text than the mixed tune",
                           "holds": a["tuned"] > m["tuned"],
                           "evidence": f"{task} perplexity {a['base']:.1f} -> {a['tuned']:.1f} (domain-only) "
                                       f"vs {m['tuned']:.1f} (mixed)"})
    return claims


def _fmt_taxonomy(changes: dict[str, dict[str, int]], top: int = 3) -> str:
    ranked = sorted(changes.items(), key=lambda kv: -abs(kv[1]["tuned"] - kv[1]["base"]))[:top]
    return ", ".join(f"{label} {c['base']}→{c['tuned']}" for label, c in ranked) or "none"


def print_summary(console: Console, summary: dict, report_html: str) -> None:
    """The closing table: domain gain, general loss, taxonomy changes and the gate, per tune."""
    # One column per tune and one row per measure: stays readable in an 80-column terminal or CI log.
    tunes = summary["tunes"]
    table = Table(title="quickstart: what each tune did (paired bootstrap, 95 % CI)")
    table.add_column("", style="bold", no_wrap=True)
    for name in tunes:
        table.add_column(name, overflow="fold")
    rows: dict[str, list[str]] = {k: [] for k in ("domain gain", "general loss", "general suite",
                                                  "taxonomy changes", "gate")}
    for t in tunes.values():
        rows["domain gain"].append("\n".join(
            f"{d['metric']} {d['base']:.3f}→{d['tuned']:.3f}\nΔ {d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            for d in t["domain"].values()) or "n/a")
        rows["general loss"].append("\n".join(
            f"perplexity {p['base']:.0f}→{p['tuned']:.0f} ({p['relative']:+.0%})\n{p['primary']['metric']} "
            f"Δ {p['primary']['delta']:+.3f} [{p['primary']['ci_low']:+.3f}, {p['primary']['ci_high']:+.3f}]"
            for p in t["general_perplexity"].values()) or "n/a")
        g = t["general_change"]
        rows["general suite"].append("n/a" if g is None else
                                     f"{g['value']:+.1%} [{g['ci_low']:+.1%}, {g['ci_high']:+.1%}]")
        rows["taxonomy changes"].append(_fmt_taxonomy(t["taxonomy"]).replace(", ", "\n"))
        n = len(t["gate"]["failures"])
        rows["gate"].append("[green]passed[/]" if t["gate"]["passed"]
                            else f"[red]failed[/] ({n} rule{'s' if n > 1 else ''})")
    for measure, cells in rows.items():
        table.add_row(measure, *cells)
    console.print(table)
    for name, t in summary["tunes"].items():
        for failure in t["gate"]["failures"]:
            console.print(f"  gate, {name}: {failure}", highlight=False)
    for c in summary["claims"]:
        mark = "[green]holds[/]" if c["holds"] else "[red]does not hold[/]"
        console.print(f"  {c['claim']}: {mark} ({c['evidence']})", highlight=False)
    si = summary["self_instruct"]
    console.print(f"  self-instruct: {si['accepted']} of {si['candidates']} candidate tasks accepted "
                  f"({si['acceptance_rate']:.0%}) from {si['prompts']} prompts via {si['backend']}. A 5M-parameter "
                  "model writes poor tasks; the step shows the pipeline (filters, accounting, resume), and its "
                  "output is not used for the tunes.", highlight=False)
    console.print("  The leaderboard tasks run on small fixture files: their figures are smoke figures, not "
                  "leaderboard scores.", highlight=False)
    if "dpo" in summary:
        from dataforge.quickstart.preference import print_dpo_summary

        print_dpo_summary(console, summary["dpo"])
    console.print(f"report: {report_html}")

"""What train, eval and compare send to the trackers. Each reads what its command already wrote
(the log rows, metrics.json, the comparison), so a tracker shows the same numbers as the run folder.

Key names: train rows keep train_log.jsonl's names (loss, lr, grad_norm, eval_<source>_loss, ...);
eval results are `<task>/<metric>` with `<task>/<metric>.ci_low`, `.ci_high`, `.stderr`, and
`<task>/n`, `<task>/labels/<label>`; compare is `<task>/<metric>.delta` with `.ci_low`, `.ci_high`
(of the delta), `.p_value`, `.base`, `.tuned`, `.relative`, and `forgetting/general_change`,
`forgetting/domain_gain` (with `.ci_low`, `.ci_high`). A suffix after a dot, not a slash: MLflow's
file store makes each `/` a folder, so `a/b` and `a/b/c` cannot both be metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataforge.track.base import Tracking, open_tracking
from dataforge.track.config import TrackingConfig

CI_KEYS = ("ci_low", "ci_high", "stderr")
DELTA_KEYS = ("ci_low", "ci_high", "p_value", "base", "tuned", "relative")


def train_row(row: dict) -> tuple[dict, int]:
    """A train_log.jsonl row as (metrics, step)."""
    return {k: v for k, v in row.items() if k != "step"}, int(row["step"])


def finish_train(tracking: Tracking, out: Path, stats: dict, files: list[Path]) -> None:
    """The run's final numbers and its manifest (and loss curve), then close the run."""
    tracking.summary({k: v for k, v in stats.items() if v is not None})
    for path in files:
        if path.is_file():
            tracking.file(path)
    tracking.finish()


def eval_metrics(metrics: dict) -> dict[str, float]:
    """metrics.json flattened to `<task>/<metric>` (+ CI bounds, stderr, sample and label counts)."""
    out: dict[str, Any] = {}
    for task, entry in metrics.items():
        out[f"{task}/n"] = entry.get("n")
        for name, m in entry.get("metrics", {}).items():
            out[f"{task}/{name}"] = m.get("value")
            for key in CI_KEYS:
                out[f"{task}/{name}.{key}"] = m.get(key)
        for group in ("labels", "abstained"):
            for label, count in (entry.get(group) or {}).items():
                out[f"{task}/{group}/{label}"] = count
    return {k: v for k, v in out.items() if v is not None}


def eval_table(metrics: dict) -> str:
    """The results as a Markdown table: task, metric, value and its CI, samples."""
    lines = ["| task | metric | value | CI low | CI high | n |", "|---|---|---|---|---|---|"]
    for task, entry in metrics.items():
        for name, m in entry.get("metrics", {}).items():
            lines.append(f"| {task} | {name}{' *' if name == entry.get('primary_metric') else ''} | "
                         f"{_num(m.get('value'))} | {_num(m.get('ci_low'))} | {_num(m.get('ci_high'))} | {entry.get('n')} |")
    return "\n".join(lines) + "\n"


def report_eval(cfg: TrackingConfig, folders: list[Path]) -> None:
    """One tracker run per results folder (a base and its tunes are separate runs of one project)."""
    for folder in folders:
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        config = {"model": manifest.get("model"), "adapter": manifest.get("adapter"),
                  "suite": (manifest.get("suite") or {}).get("name"), "seed": manifest.get("seed"),
                  "n_boot": manifest.get("n_boot"), "options": manifest.get("options")}
        with open_tracking(cfg, "eval", folder, config) as tracking:
            tracking.summary(eval_metrics(metrics))
            tracking.text("results.md", eval_table(metrics))
            for name in ("metrics.json", "manifest.json"):
                tracking.file(folder / name)


def comparison_metrics(comp: dict) -> dict[str, float]:
    """`comparison_to_dict` flattened to `<task>/<metric>/delta` and its CI, p-value and both values."""
    out: dict[str, Any] = {}
    for task, t in comp["tasks"].items():
        out[f"{task}/n_paired"] = t["n_paired"]
        for name, d in t["metrics"].items():
            out[f"{task}/{name}.delta"] = d["delta"]
            for key in DELTA_KEYS:
                out[f"{task}/{name}.{key}"] = d[key]
    f = comp["forgetting"]
    for name in ("general_change", "domain_gain"):
        if f.get(name):
            for key in ("value", "ci_low", "ci_high"):
                out[f"forgetting/{name}" + ("" if key == "value" else f".{key}")] = f[name][key]
    return {k: v for k, v in out.items() if v is not None}


def comparison_table(comp: dict) -> str:
    lines = ["| task | metric | base | tuned | Δ | CI low | CI high | p | change |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, t in comp["tasks"].items():
        for name, d in t["metrics"].items():
            lines.append(f"| {task} | {name}{' *' if name == t['primary_metric'] else ''} | {_num(d['base'])} | "
                         f"{_num(d['tuned'])} | {_num(d['delta'])} | {_num(d['ci_low'])} | {_num(d['ci_high'])} | "
                         f"{_num(d['p_value'])} | {d['verdict']} |")
    return "\n".join(lines) + "\n"


def report_comparison(cfg: TrackingConfig, comp: dict, tuned: Path, json_file: Path | None = None) -> None:
    """A compare run named `<tuned>-vs-<base>`; TensorBoard files go under the tuned results folder."""
    base_name, tuned_name = Path(comp["base"]).resolve().name, Path(comp["tuned"]).resolve().name
    config = {"base": comp["base"], "tuned": comp["tuned"], "suite": comp["suite"], "seed": comp["seed"],
              "n_boot": comp["n_boot"], "confidence": comp["confidence"]}
    with open_tracking(cfg, "compare", tuned, config, default_name=f"{tuned_name}-vs-{base_name}") as tracking:
        tracking.summary(comparison_metrics(comp))
        tracking.text("comparison.md", comparison_table(comp))
        if json_file is not None:
            tracking.file(json_file)


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

"""`dataforge quickstart --with-dpo`: the preference loop after the SFT loop, on the same tiny model.

    preference build  the bundled demo pairs (pipelines/build_dpo.yaml): pairs split by prompt
    DPO tune          a LoRA DPO tune of the tiny model on the train pairs (its reference model is
                      the base with the adapter off)
    preference eval   base and tune on the preference suite (the build's held-out pairs and general
                      perplexity) from one load, then the paired comparison and the suite's gate

The same reuse rules as the SFT steps: an output is reused when its manifest names exactly the
inputs it would be made from now, so a rerun only reads manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from dataforge.config.base import read_yaml_mapping, validate_config
from dataforge.config.suite import resolve_suite
from dataforge.quickstart.config import QuickstartConfig
from dataforge.util import atomic

STEP_COUNT = 3
LABELS = ("base", "dpo")


def build_pairs(cfg: QuickstartConfig, out: Path, show: bool):
    from dataforge.config.build import BuildConfig
    from dataforge.data.pipeline import run_build
    from dataforge.quickstart.run import _shipped

    path = _shipped(cfg.dpo.pipeline, "dpo.pipeline")
    data = {**read_yaml_mapping(path), "output": str(out / "build" / "dpo"), "seed": cfg.seed}
    return run_build(validate_config(BuildConfig, data, str(path)), overwrite=True,
                     base_dir=path.resolve().parent, show_progress=show)


def dpo_config(cfg: QuickstartConfig, build_dir: Path, out: Path):
    from dataforge.train.config import TrainConfig

    d = cfg.dpo
    return validate_config(TrainConfig, {
        "model": cfg.model, "method": "lora", "objective": "dpo", "seed": cfg.seed, "output": str(out / "train" / "dpo"),
        "lora": {"r": d.lora_r, "alpha": d.lora_alpha, "dropout": 0.0},
        "data": {"path": str(build_dir)},
        "preference": {"beta": d.beta},
        "train": {"learning_rate": d.learning_rate, "max_steps": d.max_steps, "batch_size": d.batch_size,
                  "scheduler": "cosine", "warmup_steps": min(2, d.max_steps - 1)},
        "eval": {"at_start": False, "batch_size": 16},
        "checkpoint": {"every_steps": max(1, d.max_steps // 2), "keep_last": 1},
    }, "quickstart DPO tune")


def evaluate_dpo(cfg: QuickstartConfig, build, tuned, out: Path, show: bool) -> tuple[dict[str, Path], bool]:
    """Base and DPO tune on the preference suite, into eval-dpo/<label>, from one model load."""
    from dataforge.eval.config import EvalOptions
    from dataforge.eval.runner import run_suite, suite_data_fingerprints
    from dataforge.eval.serving import load_targets
    from dataforge.eval.tasks import load_suite
    from dataforge.models import model_fingerprint
    from dataforge.quickstart.run import _eval_is_current

    suite = load_suite(resolve_suite(cfg.dpo.suite, "dpo.suite"), {"build": str(build.run_dir)})
    e = cfg.eval
    options = EvalOptions(batch_size=e.batch_size, dtype="float32", limit=e.limit, seed=cfg.seed, n_boot=e.n_boot,
                          backend="transformers", cache_dir=None, progress=show)
    common = {"suite": suite.fingerprint, "data": suite_data_fingerprints(suite), "seed": options.seed,
              "n_boot": options.n_boot,
              "options": {"batch_size": options.batch_size, "dtype": options.dtype, "limit": options.limit,
                          "seed": options.seed}}
    folders = {label: out / "eval-dpo" / label for label in LABELS}
    adapter = str(tuned.output / "adapter")
    if all(_eval_is_current(folders[label], {**common, "label": label,
                                             "model_fingerprint": model_fingerprint(cfg.model, a)})
           for label, a in (("base", None), ("dpo", adapter))):
        return folders, True
    targets, tokenizer = load_targets(cfg.model, adapter, folders["dpo"], folders["base"], options)
    for target in targets:
        target.label = target.manifest["label"] = "dpo" if target.manifest["adapter"] else "base"
    try:
        run_suite(suite, targets, options, tokenizer)
    finally:
        for target in targets:
            target.lm.close()
    return folders, False


def compare_dpo(cfg: QuickstartConfig, folders: dict[str, Path], out: Path) -> tuple[dict, bool]:
    """The DPO tune against the base with the suite's gate, into compare/dpo.json; reused when made
    from exactly these results (by run_id) with these settings."""
    from dataforge.eval.compare import check_gate, compare_results, comparison_to_dict, gate_from_manifest
    from dataforge.eval.results import load_results
    from dataforge.quickstart.run import _read_json

    base, tuned = (load_results(folders[label]) for label in LABELS)
    inputs = {"base_run_id": base.run_id, "tuned_run_id": tuned.run_id, "seed": cfg.seed, "n_boot": cfg.eval.n_boot}
    old = _read_json(out / "compare" / "dpo.json")
    if old is not None and old.get("inputs") == inputs and "summary" in old:
        return old["summary"], True
    comp = compare_results(base, tuned, seed=cfg.seed, n_boot=cfg.eval.n_boot)
    failures = check_gate(comp, gate_from_manifest(base))
    summary = dpo_summary(comp, tuned, failures)
    atomic.write_json(out / "compare" / "dpo.json", {**comparison_to_dict(comp), "inputs": inputs,
                                                     "gate_failures": failures, "summary": summary})
    return summary, False


def dpo_summary(comp, tuned, failures: list[str]) -> dict:
    """Held-out accuracy and margin of the implicit reward (the tune's value with its CI, and the change
    from the base with its paired CI), general perplexity, and the gate."""
    held_out, general = {}, {}
    for t in comp.tasks:
        if t.type == "preference":
            own = tuned.task(t.task)["metrics"]
            held_out = {"task": t.task, "n": t.n_paired, **{m: {
                "base": d.base, "tuned": d.tuned, "tuned_ci": [own[m]["ci_low"], own[m]["ci_high"]],
                "delta": d.delta, "delta_ci": [d.ci_low, d.ci_high]}
                for m, d in t.deltas.items() if m in ("accuracy", "margin")}}
        elif t.type == "perplexity" and "perplexity" in t.deltas:
            p = t.deltas["perplexity"]
            general = {"task": t.task, "base": p.base, "tuned": p.tuned,
                       "relative": p.tuned / p.base - 1 if p.base else None}
    return {"held_out": held_out, "general_perplexity": general,
            "gate": {"passed": not failures, "failures": failures}}


def run_preference_loop(cfg: QuickstartConfig, out: Path, steps, show: bool) -> tuple[dict, dict]:
    """The three steps; returns (summary, artifacts for quickstart.json)."""
    from dataforge.quickstart.run import train_or_reuse

    with steps.step("preference build", "the demo preference pairs through the build pipeline") as s:
        build = build_pairs(cfg, out, show)
        s["reused"] = build.reused == ["all"]
        sp = build.manifest["splits"]
        s["detail"] = f"train {sp['train']}, val {sp['val']}, test {sp['test']} pairs"

    with steps.step("DPO tune", f"a LoRA DPO tune of {cfg.model} on the train pairs") as s:
        tuned, s["reused"] = train_or_reuse(dpo_config(cfg, build.run_dir, out), build, show)
        stats = tuned.manifest["stats"]
        s["detail"] = (f"{tuned.manifest['total_steps']} steps, val reward accuracy "
                       f"{stats.get('final_eval_reward_accuracy', float('nan')):.2f}")

    with steps.step("preference eval", f"base and DPO tune on the '{cfg.dpo.suite}' suite, compare, gate") as s:
        folders, evals_reused = evaluate_dpo(cfg, build, tuned, out, show)
        summary, compare_reused = compare_dpo(cfg, folders, out)
        s["reused"] = evals_reused and compare_reused
        s["detail"] = f"gate {'passed' if summary['gate']['passed'] else 'failed'}; {out / 'compare' / 'dpo.json'}"

    artifacts = {"build": {"path": str(build.run_dir), "fingerprint": build.manifest["fingerprint"]},
                 "train": {"path": str(tuned.output), "data_fingerprint": tuned.manifest["data"]["fingerprint"]},
                 "eval": {label: str(f) for label, f in folders.items()},
                 "compare": str(out / "compare" / "dpo.json")}
    return summary, artifacts


def _ci(lo: float, hi: float, fmt: str) -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def print_dpo_summary(console: Console, summary: dict[str, Any]) -> None:
    """A few lines: what DPO did on the held-out pairs and to general text."""
    h, g = summary["held_out"], summary["general_perplexity"]
    console.print(f"DPO tune on {h.get('n', 0)} held-out pairs (implicit reward; the base scores 0.5 and 0, "
                  "being its own reference; 95 % CI):", highlight=False)
    for metric, fmt in (("accuracy", ".3f"), ("margin", ".2f")):
        if metric in h:
            m = h[metric]
            console.print(f"  {metric} {m['base']:{fmt}} -> {m['tuned']:{fmt}} {_ci(*m['tuned_ci'], fmt)}, "
                          f"change {m['delta']:+{fmt}} {_ci(*m['delta_ci'], '+' + fmt)}", highlight=False)
    if g:
        console.print(f"  general perplexity ({g['task']}) {g['base']:.1f} -> {g['tuned']:.1f} "
                      f"({g['relative']:+.0%})", highlight=False)
    gate = summary["gate"]
    console.print("  gate: " + ("[green]passed[/]" if gate["passed"] else "[red]failed[/]"), highlight=False)
    for failure in gate["failures"]:
        console.print(f"  gate, dpo: {failure}", highlight=False)

"""`dataforge quickstart`: the whole product on the built-in tiny model, offline, top to bottom.

    build         the demo data (domain + general) through the real build, twice: a domain-only
                  train mix and a mixed one (same split, so both tunes are scored on the same test)
    self-instruct grows the domain seed tasks with the tiny model (shown for what it does, not
                  used for training: a 5M-parameter model writes poor tasks)
    tune          two LoRA tunes of the tiny model, one per build
    eval          base model and both tunes on the regression suite (base + domain-only tune from
                  one model load)
    compare       paired-bootstrap deltas, forgetting and the suite's gate, per tune
    report        HTML + Markdown report, and `quickstart.json` with the summary

Every step first checks whether its output is already there for exactly its inputs (each output's
manifest names the fingerprint of what it was made from) and reuses it; otherwise it resumes or
redoes it. So an immediate rerun only reads manifests, and a changed knob redoes just the steps
downstream of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from dataforge.config.base import read_yaml_mapping, validate_config
from dataforge.config.suite import resolve_suite
from dataforge.errors import ConfigError, StateError
from dataforge.paths import DEMO_DATA_DIR, pipelines_dir
from dataforge.quickstart.config import QuickstartConfig, Size, quickstart_config
from dataforge.quickstart.summary import demo_claims, tune_summary
from dataforge.util import atomic
from dataforge.util.fingerprint import fingerprint, library_versions, sha256_file

TUNES = ("domain-only", "mixed")
MARKER = ".dataforge-quickstart"
MANIFEST = "quickstart.json"
STEP_COUNT = 6


@dataclass
class StepRecord:
    name: str
    reused: bool
    seconds: float
    detail: str


@dataclass
class QuickstartResult:
    out: Path
    report_html: Path
    report_md: Path
    summary: dict
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


class _Steps:
    """One line when a step starts and one when it ends, saying whether it was reused.

    Plain lines rather than a live display: the build, training and eval draw their own progress
    bars inside a step, and rich allows one live display at a time."""

    def __init__(self, console: Console, total: int = STEP_COUNT):
        self.console = console
        self.total = total
        self.records: list[StepRecord] = []

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[dict]:
        n = len(self.records) + 1
        self.console.print(f"[bold][{n}/{self.total}] {name}[/]: {what}", highlight=False)
        state: dict[str, Any] = {"reused": False, "detail": ""}
        t0 = time.perf_counter()
        yield state
        seconds = time.perf_counter() - t0
        self.records.append(StepRecord(name, state["reused"], round(seconds, 2), state["detail"]))
        tag = "[cyan]reused[/]" if state["reused"] else "[green]done[/]"
        self.console.print(f"      {tag} {name} in {seconds:.1f}s  {state['detail']}", highlight=False)


def _shipped(name: str, where: str) -> Path:
    """A path, or the name of a file in the shipped pipelines/ folder."""
    p = Path(name)
    if p.is_file():
        return p
    if (pipelines_dir() / name).is_file():
        return pipelines_dir() / name
    raise ConfigError(f"{where}: '{name}' is neither a file nor a pipeline in {pipelines_dir()}")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim(out: Path) -> None:
    """The quickstart replaces its own outputs freely, so it must never do so in someone else's folder."""
    if out.exists() and not out.is_dir():
        raise StateError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise StateError(f"{out} is not empty and holds no quickstart run; choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / MARKER, "dataforge quickstart\n")


# ---------------------------------------------------------------------------------------------- steps

def build_datasets(cfg: QuickstartConfig, out: Path, show: bool) -> dict[str, Any]:
    """One build per tune, differing only in the train mix; the split happens before the mix, so
    the val and test splits (and thus the domain eval task) are the same for both."""
    from dataforge.config.build import BuildConfig
    from dataforge.data.pipeline import run_build

    path = _shipped(cfg.build.pipeline, "build.pipeline")
    raw = read_yaml_mapping(path)
    builds = {}
    for name, mix in zip(TUNES, (cfg.build.domain_mix, cfg.build.mixed_mix), strict=True):
        data = {**raw, "output": str(out / "build" / name), "seed": cfg.seed,
                "mix": {**(raw.get("mix") or {}), "proportions": mix}}
        # overwrite: the folder is the quickstart's own (see _claim); a build with the same config
        # and inputs is still reused whole.
        builds[name] = run_build(validate_config(BuildConfig, data, str(path)), overwrite=True,
                                 base_dir=path.resolve().parent, show_progress=show)
    tests = {name: sha256_file(b.run_dir / "splits" / "test.parquet") for name, b in builds.items()}
    if len(set(tests.values())) != 1:
        raise StateError(f"the builds' test splits differ ({tests}); the tunes could not be compared on one test set")
    return builds


def pick_backend(choice: str) -> str:
    """`auto` serves with vLLM when it is installed (GPU or its CPU build), else with transformers."""
    if choice != "auto":
        return choice
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def grow_seed_tasks(cfg: QuickstartConfig, out: Path, console: Console, show: bool):
    from dataforge.selfinstruct.config import SelfInstructConfig
    from dataforge.selfinstruct.run import run_self_instruct

    path = _shipped(cfg.self_instruct.pipeline, "self_instruct.pipeline")
    raw = read_yaml_mapping(path)
    seeds = str(raw.get("seeds", ""))
    if seeds.startswith("demo:"):
        seeds = str(DEMO_DATA_DIR / seeds[len("demo:"):])
    elif seeds and not Path(seeds).is_absolute():
        seeds = str(path.resolve().parent / seeds)
    k = cfg.self_instruct
    data = {**raw, "seeds": seeds, "output": str(out / "self-instruct"), "model": cfg.model, "seed": cfg.seed,
            "backend": {**(raw.get("backend") or {}), "name": pick_backend(k.backend)},
            "prompt_style": k.prompt_style, "num_tasks": k.num_tasks, "max_prompts": k.max_prompts,
            "batch_size": k.batch_size}
    si_cfg = validate_config(SelfInstructConfig, data, str(path))
    before = _read_json(out / "self-instruct" / "manifest.json")
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]self-instruct prompts"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("accepted {task.fields[accepted]}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("prompts", total=si_cfg.prompt_budget, accepted=0)
            result = run_self_instruct(si_cfg, progress=lambda ledger, _: bar.update(
                task, completed=ledger.prompts, accepted=ledger.accepted))
    else:
        result = run_self_instruct(si_cfg)
    # every generation comes from the journal when the run was already there: nothing new was generated
    reused = before is not None and before.get("generation") == result.manifest["generation"] \
        and before.get("status") == result.manifest["status"]
    return result, reused


def train_config(cfg: QuickstartConfig, name: str, build_dir: Path, out: Path):
    from dataforge.train.config import TrainConfig

    t = cfg.tune
    return validate_config(TrainConfig, {
        "model": cfg.model, "method": "lora", "seed": cfg.seed, "output": str(out / "train" / name),
        "lora": {"r": t.lora_r, "alpha": t.lora_alpha, "dropout": 0.05},
        "data": {"path": str(build_dir)},
        "train": {"learning_rate": t.learning_rate, "max_steps": t.max_steps, "batch_size": t.batch_size,
                  "scheduler": "cosine", "warmup_ratio": 0.05},
        "eval": {"every_steps": t.eval_every, "at_start": True, "batch_size": 16},
        "checkpoint": {"every_steps": max(1, t.max_steps // 4), "keep_last": 1},
    }, f"quickstart tune {name}")


def tune(cfg: QuickstartConfig, name: str, build, out: Path, show: bool):
    """One of the two SFT tunes, reused, resumed or redone (see train_or_reuse)."""
    return train_or_reuse(train_config(cfg, name, build.run_dir, out), build, show)


def train_or_reuse(train_cfg, build, show: bool):
    """Reuse a finished run of this exact config on this exact data, resume an unfinished one,
    redo anything else. Returns (TrainResult, reused)."""
    from dataforge.train.loop import TrainResult, train

    run_dir = Path(train_cfg.output)
    old = _read_json(run_dir / "manifest.json")
    same = old is not None and old.get("config") == train_cfg.model_dump(mode="json") \
        and old.get("data", {}).get("fingerprint") == build.manifest["fingerprint"]
    if same and old.get("complete") and (run_dir / "adapter").is_dir():
        return TrainResult(run_dir, old), True
    resume = same and not old.get("complete")
    overwrite = not resume and run_dir.exists()
    return train(train_cfg, resume=resume, overwrite=overwrite, show_progress=show), False


def _eval_is_current(folder: Path, expected: dict) -> bool:
    """The results folder was made by this model (weights + adapter), suite, data and options."""
    manifest = _read_json(folder / "manifest.json")
    if manifest is None or not (folder / "metrics.json").is_file():
        return False
    got = {"label": manifest.get("label"), "model_fingerprint": manifest.get("model_fingerprint"),
           "suite": (manifest.get("suite") or {}).get("fingerprint"), "data": manifest.get("data"),
           "options": manifest.get("options"), "seed": manifest.get("seed"), "n_boot": manifest.get("n_boot")}
    return got == expected


def evaluate(cfg: QuickstartConfig, builds: dict, tunes: dict, out: Path, show: bool) -> tuple[dict[str, Path], bool]:
    """Base and both tunes on the suite, into eval/<label>, from one load: one transformers model holds
    both adapters (the base is it with them switched off), and with vLLM one engine serves all three
    (`eval.lora_mode`). Returns the folders and whether all of them were reused."""
    from dataforge.eval.config import EvalOptions
    from dataforge.eval.runner import run_suite, suite_data_fingerprints
    from dataforge.eval.serving import load_targets
    from dataforge.eval.tasks import load_suite
    from dataforge.models import model_fingerprint

    suite = load_suite(resolve_suite(cfg.eval.suite, "eval.suite"), {"build": str(builds[TUNES[0]].run_dir)})
    e = cfg.eval
    options = EvalOptions(batch_size=e.batch_size, dtype="float32", limit=e.limit, seed=cfg.seed, n_boot=e.n_boot,
                          backend=pick_backend(e.backend), lora_mode=e.lora_mode,
                          cache_dir=out / "eval-cache", progress=show)
    common = {"suite": suite.fingerprint, "data": suite_data_fingerprints(suite), "seed": options.seed,
              "n_boot": options.n_boot,
              "options": {"batch_size": options.batch_size, "dtype": options.dtype, "limit": options.limit,
                          "seed": options.seed}}
    folders = {"base": out / "eval" / "base", **{name: out / "eval" / name for name in TUNES}}
    adapters = {name: str(tunes[name].output / "adapter") for name in TUNES}
    wanted = {"base": None, **adapters}
    if all(_eval_is_current(folders[label], {**common, "label": label,
                                             "model_fingerprint": model_fingerprint(cfg.model, a)})
           for label, a in wanted.items()):
        return folders, True
    targets, tokenizer = load_targets(cfg.model, list(adapters.values()), [folders[n] for n in TUNES],
                                      folders["base"], options)
    names = {a: n for n, a in adapters.items()}
    for target in targets:
        target.label = target.manifest["label"] = names.get(target.manifest["adapter"], "base")
    try:
        run_suite(suite, targets, options, tokenizer)
    finally:
        for target in targets:
            target.lm.close()
        for shared in {id(t.shared): t.shared for t in targets if t.shared is not None}.values():
            shared.close()
    return folders, False


def compare_tunes(cfg: QuickstartConfig, folders: dict[str, Path], out: Path) -> tuple[Any, dict, bool]:
    """Every tune against the base, laid out as the report. The bootstrap is the costly part, so a
    report made from exactly these results (by run_id) with these settings is reused as it is.
    Returns (report or None when reused, summary of each tune, reused)."""
    from dataforge.eval.compare import check_gate, comparison_to_dict, gate_from_manifest
    from dataforge.eval.report import build_report
    from dataforge.eval.results import load_results

    order = ["base", *TUNES]
    inputs = [{"label": label, "path": str(folders[label]), "run_id": load_results(folders[label]).run_id}
              for label in order]
    settings = {"seed": cfg.seed, "n_boot": cfg.eval.n_boot}
    old = _read_json(out / "report" / "manifest.json")
    files = [out / "report" / "report.html", out / "report" / "report.md",
             *(out / "compare" / f"{name}.json" for name in TUNES)]
    if old is not None and old.get("inputs") == inputs and old.get("settings") == settings \
            and all(f.is_file() for f in files):
        return None, old["tunes"], True
    report = build_report([folders[label] for label in order], seed=cfg.seed, n_boot=cfg.eval.n_boot,
                          title="dataforge quickstart: base vs domain-only tune vs mixed tune")
    gate = gate_from_manifest(report.runs[0])
    tunes = {}
    for name, comp in zip(TUNES, report.comparisons, strict=True):
        failures = check_gate(comp, gate)
        atomic.write_json(out / "compare" / f"{name}.json",
                          {**comparison_to_dict(comp), "base_run_id": comp.base.run_id,
                           "tuned_run_id": comp.tuned.run_id, "gate_failures": failures})
        tunes[name] = tune_summary(comp, failures)
    return report, tunes, False


def write_report_files(report, tunes: dict, folders: dict[str, Path], cfg: QuickstartConfig, out: Path) -> tuple[Path, Path]:
    """The HTML and Markdown report, then its manifest naming the results it was made from."""
    from dataforge.eval.report import write_report
    from dataforge.eval.results import load_results

    html, md = write_report(report, out / "report" / "report.html")
    atomic.write_json(out / "report" / "manifest.json", {
        "kind": "report",
        "inputs": [{"label": label, "path": str(folders[label]), "run_id": load_results(folders[label]).run_id}
                   for label in ("base", *TUNES)],
        "settings": {"seed": cfg.seed, "n_boot": cfg.eval.n_boot},
        "figures": sorted(p.name for p in (out / "report" / "report_files").glob("*.png")),
        "tunes": tunes,
    })
    return html, md


# ---------------------------------------------------------------------------------------------- recipe

def run_quickstart(out: Path, *, size: Size = "full", overrides: dict | None = None,
                   config: QuickstartConfig | None = None, show_progress: bool = True,
                   console: Console | None = None) -> QuickstartResult:
    """Run (or reuse) every step into `out`; returns the report paths and the summary figures."""
    cfg = config or quickstart_config(size, overrides)
    console = console or Console(stderr=True, quiet=not show_progress)
    out = Path(out)
    _claim(out)
    from dataforge.quickstart import preference

    steps = _Steps(console, STEP_COUNT + (preference.STEP_COUNT if cfg.dpo.enabled else 0))
    show = show_progress

    with steps.step("build", "the demo data (domain + general) through the build pipeline, two train mixes") as s:
        builds = build_datasets(cfg, out, show)
        s["reused"] = all(b.reused == ["all"] for b in builds.values())
        s["detail"] = "; ".join(f"{n}: train {b.manifest['splits']['train']}, test {b.manifest['splits']['test']}, "
                                f"fingerprint {b.manifest['fingerprint']}" for n, b in builds.items())

    with steps.step("self-instruct", f"grow the domain seed tasks with the {cfg.model} model") as s:
        si, s["reused"] = grow_seed_tasks(cfg, out, console, show)
        acc = si.manifest["accounting"]
        s["detail"] = (f"{acc['accepted']} accepted of {acc['candidates']} candidates "
                       f"({acc['acceptance_rate']:.0%}), {si.manifest['num_prompts']} prompts, "
                       f"backend {si.manifest['backend']}")

    tunes = {}
    with steps.step("tune", f"two LoRA tunes of {cfg.model}: domain-only and mixed") as s:
        flags = []
        for name in TUNES:
            tunes[name], reused = tune(cfg, name, builds[name], out, show)
            flags.append(reused)
        s["reused"] = all(flags)
        s["detail"] = "; ".join(
            f"{n}: {t.manifest['total_steps']} steps{' (reused)' if r else ''}, val loss domain "
            f"{t.manifest['stats'].get('final_eval_domain_loss', float('nan')):.3f} general "
            f"{t.manifest['stats'].get('final_eval_general_loss', float('nan')):.3f}"
            for (n, t), r in zip(tunes.items(), flags, strict=True))

    with steps.step("eval", f"base and both tunes on the '{cfg.eval.suite}' suite") as s:
        folders, s["reused"] = evaluate(cfg, builds, tunes, out, show)
        s["detail"] = ", ".join(str(f) for f in folders.values())

    with steps.step("compare", "paired bootstrap, forgetting and the gate, per tune") as s:
        report, tune_figures, s["reused"] = compare_tunes(cfg, folders, out)
        s["detail"] = ", ".join(f"{n}: gate {'passed' if t['gate']['passed'] else 'failed'}"
                                for n, t in tune_figures.items())

    with steps.step("report", "HTML and Markdown") as s:
        html, md = out / "report" / "report.html", out / "report" / "report.md"
        if report is None:
            s["reused"] = True
        else:
            html, md = write_report_files(report, tune_figures, folders, cfg, out)
        s["detail"] = str(html)

    summary = _summary(cfg, si, tune_figures)
    dpo_artifacts = None
    if cfg.dpo.enabled:
        summary["dpo"], dpo_artifacts = preference.run_preference_loop(cfg, out, steps, show)
    result = QuickstartResult(out, html, md, summary, steps.records)
    _write_manifest(out, cfg, size, result, builds, si, tunes, folders, dpo_artifacts)
    return result


def _summary(cfg: QuickstartConfig, si, tunes: dict) -> dict:
    acc = si.manifest["accounting"]
    return {"tunes": tunes, "claims": demo_claims(tunes),
            "self_instruct": {"accepted": acc["accepted"], "candidates": acc["candidates"],
                              "acceptance_rate": acc["acceptance_rate"], "prompts": si.manifest["num_prompts"],
                              "backend": si.manifest["backend"]}}


def _write_manifest(out: Path, cfg: QuickstartConfig, size: str, result: QuickstartResult, builds: dict, si,
                    tunes: dict, folders: dict[str, Path], dpo_artifacts: dict | None = None) -> None:
    """`quickstart.json`: each artifact with the fingerprint it was made from, the steps and the summary."""
    evals = {}
    for label, folder in folders.items():
        m = _read_json(folder / "manifest.json") or {}
        evals[label] = {"path": str(folder), "run_id": m.get("run_id"), "model_fingerprint": m.get("model_fingerprint"),
                        "adapter": m.get("adapter")}
    atomic.write_json(out / MANIFEST, {
        "kind": "quickstart",
        "size": size,
        "config": cfg.model_dump(mode="json"),
        "config_fingerprint": fingerprint(cfg.model_dump(mode="json")),
        "steps": [s.__dict__ for s in result.steps],
        "seconds": round(result.seconds, 2),
        "artifacts": {
            "build": {n: {"path": str(b.run_dir), "fingerprint": b.manifest["fingerprint"]} for n, b in builds.items()},
            "self_instruct": {"path": str(si.output), "status": si.manifest["status"]},
            "train": {n: {"path": str(t.output), "data_fingerprint": t.manifest["data"]["fingerprint"]}
                      for n, t in tunes.items()},
            "eval": evals,
            "report": {"html": str(result.report_html), "md": str(result.report_md)},
            **({"dpo": dpo_artifacts} if dpo_artifacts is not None else {}),
        },
        "summary": result.summary,
        "libraries": library_versions(),
    })

"""The build: one ordered list of stages (dataforge.data.stages.BUILD_STAGES) run into a run folder.

This module owns what is about the run folder rather than about any stage: refusing to clobber
another run's folder, the whole-build "up to date" shortcut, publishing the splits, the tokenized
dataset and the side files, and the manifest, written last. The runner (dataforge.data.runner)
derives keys, caching, counts and the accounting invariant `records read = records kept + records
rejected` from the stage list, checked per source before anything is published.

Up to date. Stage keys depend only on the config, the content of the files each stage reads and the
code (see dataforge.data.runner), so the key of the last stage is computed before any stage runs.
When the run folder's complete manifest records that same key, nothing that can change an output
has changed, and the run is reused whole.

The dataset fingerprint is a hash of the published content: every column of every split, every
column of the tokenized tables (token ids, labels, masks, positions), the template and the
tokenize settings training reads. Two builds publish the same data exactly when their fingerprints
agree. Only `origin_file`, where a record's file sat on this machine, is left out, so the same
inputs built in two checkouts share a fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataforge import __version__
from dataforge.config.build import BuildConfig, Task
from dataforge.data import record as R
from dataforge.data.cache import StageCache
from dataforge.data.runner import FileHashes, PlannedStage, Runner, code_version, plan
from dataforge.data.stage import BuildContext, Stage
from dataforge.data.stages import BUILD_STAGES, SPLITS
from dataforge.errors import InternalError, StateError
from dataforge.paths import is_hub_id
from dataforge.util import atomic
from dataforge.util.fingerprint import content_fingerprint, fingerprint, library_versions
from dataforge.util.progress import StepProgress

MANIFEST = "manifest.json"


@dataclass
class BuildResult:
    run_dir: Path
    manifest: dict
    reused: list[str] = field(default_factory=list)


def input_fingerprints(ctx: BuildContext, hashes: FileHashes) -> list[dict]:
    """The manifest's `inputs`: each input's path, source and sha256 (hub ids: none, flagged)."""
    rows = []
    for spec in ctx.resolve(ctx.cfg.inputs):
        if Path(spec.path).exists() or not is_hub_id(spec.path):
            rows.append({"path": spec.path, "source": spec.source, "sha256": hashes(Path(spec.path))})
        else:
            rows.append({"path": spec.path, "source": spec.source, "sha256": None, "hub": True})
    return rows


MARKER = ".dataforge-build"


def _check_run_dir(run_dir: Path, config_fp: str, overwrite: bool) -> dict | None:
    """Refuse to write into a folder that holds something else; return the old manifest if any.

    A marker with the config fingerprint is written before any work, so a killed run's folder is
    recognised as ours (and resumed from its cache) rather than mistaken for a stranger's."""
    if run_dir.exists() and not run_dir.is_dir():
        raise StateError(f"output path {run_dir} exists and is not a folder")
    old = None
    manifest_path, marker = run_dir / MANIFEST, run_dir / MARKER
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if (old.get("kind") != "build" or old.get("config_fingerprint") != config_fp) and not overwrite:
            raise StateError(f"{run_dir} holds a different run (config {old.get('config_fingerprint')}, "
                             f"this one {config_fp}); choose another -o or pass --overwrite")
    elif marker.is_file():
        theirs = marker.read_text(encoding="utf-8").strip()
        if theirs != config_fp and not overwrite:
            raise StateError(f"{run_dir} holds an unfinished different run (config {theirs}); "
                             "choose another -o or pass --overwrite")
    elif run_dir.is_dir():
        leftovers = sorted(p.name for p in run_dir.iterdir() if p.name != ".cache")
        if leftovers and not overwrite:
            raise StateError(f"{run_dir} is not empty and holds no dataforge build ({', '.join(leftovers[:5])}); "
                             "choose another -o or pass --overwrite")
    atomic.write_text(marker, config_fp + "\n")
    return old


def run_build(cfg: BuildConfig, *, overwrite: bool = False, base_dir: Path | None = None,
              show_progress: bool = True, stages: list[Stage] | None = None) -> BuildResult:
    """Build the dataset described by `cfg` into `cfg.output` with `stages` (default BUILD_STAGES),
    reusing every stage whose key is unchanged, or the whole run when the last key is."""
    run = prepare_run(cfg, base_dir, overwrite, default_stages(cfg) if stages is None else stages)
    if run.up_to_date is not None:
        return run.up_to_date
    run_dir, ctx, planned = run.run_dir, run.ctx, run.planned
    cache = StageCache(run_dir / ".cache")
    progress = StepProgress("build", enabled=show_progress)
    runner = Runner(cache, progress)
    with progress:
        frame = runner.run(planned, ctx)
        manifest = _publish(run_dir, ctx, planned, runner, frame, progress, run.identity)
    cache.prune({f"{p.stage.name}-{p.key}" for p in planned if p.stage.cached})
    return BuildResult(run_dir, manifest, reused=runner.reused)


@dataclass
class PreparedRun:
    """What every engine needs before its first stage: the resolved context, the planned stages, the
    manifest's identity (config, its fingerprint, inputs) and, when the run folder already holds this
    exact build, its result (`up_to_date`)."""

    ctx: BuildContext
    run_dir: Path
    planned: list[PlannedStage]
    identity: dict
    up_to_date: BuildResult | None


def prepare_run(cfg: BuildConfig, base_dir: Path | None, overwrite: bool, stages: list[Stage]) -> PreparedRun:
    """Resolve inputs (the manifest records the resolved paths), claim the run folder, remove a killed
    run's half-written folders and plan the stage keys."""
    inputs = BuildContext(cfg, base_dir).resolve(cfg.inputs)
    ctx = BuildContext(cfg.model_copy(update={"inputs": inputs}), base_dir)
    hashes = FileHashes()
    inputs_fp = input_fingerprints(ctx, hashes)
    config_json = ctx.cfg.model_dump(mode="json")
    config_fp = fingerprint(config_json)
    run_dir = Path(ctx.cfg.output)
    old = _check_run_dir(run_dir, config_fp, overwrite)
    atomic.remove_stale_temps(run_dir)
    planned = plan(stages, ctx, hashes)
    current = old is not None and old.get("build_key") == planned[-1].key and old.get("complete") \
        and (run_dir / "splits").is_dir()
    return PreparedRun(ctx, run_dir, planned, {"config": config_json, "config_fingerprint": config_fp,
                                               "inputs": inputs_fp},
                       BuildResult(run_dir, old, reused=["all"]) if current else None)


def default_stages(cfg: BuildConfig) -> list[Stage]:
    """BUILD_STAGES, or the preference build's stages for `task: preference`."""
    if cfg.task is Task.preference:
        from dataforge.data.preference_stages import PREFERENCE_STAGES

        return PREFERENCE_STAGES
    return BUILD_STAGES


def _alpaca_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON object per record: instruction, input, output, system and history when set, source, id;
    tool conversations add tools and tool_turns, plain-text records are {text, source, id}."""
    has_system, has_history = pl.col("system") != "", pl.col("history").list.len() > 0
    has_tools = (pl.col("tools").fill_null("") != "") | (pl.col("tool_turns").list.len().fill_null(0) > 0)

    def obj(*extra: str) -> pl.Expr:
        return pl.struct("instruction", "input", "output", *extra, "source", "id").struct.json_encode()

    return frame.select(
        pl.when(pl.col("kind") == R.KIND_TEXT).then(pl.struct(pl.col("output").alias("text"), "source", "id").struct.json_encode())
        .when(has_tools).then(obj("system", "history", "tools", "tool_turns"))
        .when(has_system & has_history).then(obj("system", "history"))
        .when(has_system).then(obj("system"))
        .when(has_history).then(obj("history"))
        .otherwise(obj())
    ).to_series()


def _tokenize_settings(ctx: BuildContext) -> dict:
    """What training reads from the manifest about the tokenized data (and so part of the fingerprint)."""
    tok = ctx.cfg.tokenize
    return {"tokenizer": tok.tokenizer, "max_length": tok.max_length, "padding_side": tok.padding_side,
            "pad_to_multiple_of": tok.pad_to_multiple_of, "train_on_inputs": tok.train_on_inputs,
            "overlength": tok.overlength.value, "packed": tok.pack}


def _publish(run_dir: Path, ctx: BuildContext, planned: list[PlannedStage], runner: Runner, frame: pl.DataFrame,
             progress: StepProgress, identity: dict) -> dict:
    """Check the accounting, then write every output; the manifest goes last and marks the run complete."""
    if R.SPLIT not in frame.columns:
        raise InternalError("the build's last frame has no 'split' column; the stage list needs a split stage")
    rejects = runner.all_rejects()
    sources = runner.accounting(frame, rejects, SPLITS)
    splits = {s: frame.filter(pl.col(R.SPLIT) == s) for s in SPLITS}
    template = runner.stats.get("template")
    template_info = {**template, "variants": ctx.cfg.template.variants} if template else None
    tok_settings = _tokenize_settings(ctx) if "tokenize" in runner.stats else None
    tok_key = next((p.key for p in planned if p.stage.name == "tokenize"), "")
    preference = None
    if ctx.cfg.task is Task.preference:
        from dataforge.data.preference_publish import preference_lines, preference_summary, publish_columns
        from dataforge.data.preference_stages import is_kto

        preference = preference_summary(frame, runner, SPLITS, ctx.cfg)
        splits = {s: publish_columns(part, is_kto(ctx.cfg)) for s, part in splits.items()}

    with progress.step("write") as step:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST).unlink(missing_ok=True)
        for split, part in splits.items():
            with atomic.atomic_path(run_dir / "splits" / f"{split}.parquet") as tmp:
                part.write_parquet(tmp)
            if preference is None:
                lines = _alpaca_lines(part)
                atomic.write_text(run_dir / "splits" / f"{split}.alpaca.jsonl", "".join(x + "\n" for x in lines))
            else:
                atomic.write_jsonl(run_dir / "splits" / f"{split}.jsonl", preference_lines(part))
        atomic.write_jsonl(run_dir / "rejects.jsonl", rejects.sort("stage", "source", "origin_file", "origin_line").iter_rows(named=True))
        atomic.write_jsonl(run_dir / "clusters.jsonl", runner.extra.get("clusters", []))
        atomic.write_jsonl(run_dir / "contamination.jsonl", runner.extra.get("contamination", []))
        if runner.tables:
            import datasets

            datasets.disable_progress_bars()  # our own step display covers it
            # A fingerprint from the step's key: without one, datasets pickles the whole table to hash it.
            tokenized = datasets.DatasetDict({s: datasets.Dataset(t, fingerprint=fingerprint(tok_key, s)[:16])
                                              for s, t in runner.tables.items()})
            with atomic.atomic_path(run_dir / "tokenized", is_dir=True) as tmp:
                # An empty split still gets one (empty) shard: without one, load_from_disk fails.
                tokenized.save_to_disk(str(tmp), num_shards={s: 1 if d.num_rows == 0 else None for s, d in tokenized.items()})
        if template_info:
            atomic.write_json(run_dir / "template.json", template_info)
        published = {f"splits/{s}": part.drop("origin_file") for s, part in splits.items()}
        published.update({f"tokenized/{s}": t for s, t in runner.tables.items()})
        manifest = {
            "kind": "build",
            "task": ctx.cfg.task.value,
            "complete": True,
            "dataforge_version": __version__,
            "code_version": code_version(),
            **identity,
            "build_key": planned[-1].key,
            "fingerprint": fingerprint(content_fingerprint(published), template_info, tok_settings),
            "seed": ctx.cfg.seed,
            "steps": runner.steps,
            "sources": sources,
            "splits": {s: part.height for s, part in splits.items()},
            "rejected": rejects.height,
            "mix": runner.stats.get("mix"),
            **({"preference": preference} if preference is not None else {}),
            "template": template_info,
            "tokenize": {**tok_settings, **runner.stats["tokenize"]} if tok_settings else None,
            "reused_steps": runner.reused,
            "step_seconds": dict(progress.seconds),
            "libraries": library_versions(),
        }
        atomic.write_json(run_dir / MANIFEST, manifest)
        step.done(detail=str(run_dir))
    return manifest

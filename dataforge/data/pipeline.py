"""The build recipe: collect -> clean -> dedupe -> decontaminate -> split -> mix -> template -> tokenize.

Reads top to bottom. Each stage is a pure function over a polars frame (see `dataforge.data.stage`);
this module owns the plumbing the stages must not know about: caching by fingerprint, progress,
counting, the run folder and its manifest, and the accounting invariant
`records read = records kept + records rejected`, checked per source before anything is published.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataforge import __version__
from dataforge.config.build import BuildConfig, InputSpec
from dataforge.data import record as R
from dataforge.data.cache import StageCache
from dataforge.data.stage import StageResult
from dataforge.errors import InputError, StateError
from dataforge.paths import resolve_data_path
from dataforge.util import atomic
from dataforge.util.fingerprint import fingerprint, library_versions, sha256_tree
from dataforge.util.progress import StepProgress

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


@dataclass
class BuildResult:
    run_dir: Path
    manifest: dict
    reused: list[str] = field(default_factory=list)


def resolve_inputs(specs: list[InputSpec], base_dir: Path | None) -> list[InputSpec]:
    """`demo:NAME` is a bundled demo file; other relative paths resolve against the YAML's folder
    first, then the working directory. Hub ids (no such local path) pass through unchanged."""
    return [spec.model_copy(update={"path": resolve_data_path(spec.path, base_dir)}) for spec in specs]


def input_fingerprints(specs: list[InputSpec]) -> list[dict]:
    rows = []
    for spec in specs:
        p = Path(spec.path)
        if p.exists():
            rows.append({"path": spec.path, "source": spec.source, "sha256": sha256_tree(p)})
        elif spec.path.count("/") <= 1 and not spec.path.startswith((".", "/", "~")):
            rows.append({"path": spec.path, "source": spec.source, "sha256": None, "hub": True})
        else:
            raise InputError("file does not exist", file=spec.path)
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


class _Runner:
    """Runs stages through the cache and records per-step counts."""

    def __init__(self, cache: StageCache, progress: StepProgress):
        self.cache, self.progress = cache, progress
        self.steps: list[dict] = []
        self.rejects: list[pl.DataFrame] = []
        self.extra: dict[str, list[dict]] = {}
        self.keys: set[str] = set()
        self.reused: list[str] = []

    def run(self, name: str, key_parts: tuple, n_in: int, fn: Callable[[], StageResult]) -> tuple[StageResult, str]:
        key = fingerprint(name, *key_parts)
        self.keys.add(f"{name}-{key}")
        t0 = time.perf_counter()
        with self.progress.step(name) as step:
            result = self.cache.load(name, key)
            reused = result is not None
            if result is None:
                result = fn()
                self.cache.save(name, key, result)
            step.done(reused=reused, detail=f"{result.kept.height:,} kept, {result.rejected.height:,} dropped")
        if reused:
            self.reused.append(name)
        dropped = (result.rejected.group_by("reason").len().sort("reason").rows() if result.rejected.height else [])
        self.steps.append({
            "name": name, "in": n_in, "out": result.kept.height,
            "dropped": {r: n for r, n in dropped}, "seconds": round(time.perf_counter() - t0, 3),
            "reused": reused, "key": key, **({"stats": result.stats} if result.stats else {}),
        })
        self.rejects.append(result.rejected)
        for k, rows in result.extra.items():
            self.extra.setdefault(k, []).extend(rows)
        return result, key


def run_build(cfg: BuildConfig, *, overwrite: bool = False, base_dir: Path | None = None,
              show_progress: bool = True) -> BuildResult:
    """Build the dataset described by `cfg` into `cfg.output`, reusing cached stages."""
    from dataforge.data.clean import clean
    from dataforge.data.collect import collect
    from dataforge.data.decontaminate import decontaminate, suite_eval_texts
    from dataforge.data.dedupe import exact_duplicates, near_duplicates, reference_duplicates
    from dataforge.data.io.readers import read_records
    from dataforge.data.mix import mix_sources
    from dataforge.data.split import split_records
    from dataforge.data.templates import apply_template, load_template

    cfg = cfg.model_copy(update={"inputs": resolve_inputs(cfg.inputs, base_dir)})
    inputs_fp = input_fingerprints(cfg.inputs)
    config_json = cfg.model_dump(mode="json")
    config_fp = fingerprint(config_json)
    state_fp = fingerprint(config_json, inputs_fp)
    run_dir = Path(cfg.output)
    old = _check_run_dir(run_dir, config_fp, overwrite)
    if old is not None and old.get("state_fingerprint") == state_fp and old.get("complete") and \
            (run_dir / "splits").is_dir():
        return BuildResult(run_dir, old, reused=["all"])

    cache = StageCache(run_dir / ".cache")
    progress = StepProgress("build", enabled=show_progress)
    run = _Runner(cache, progress)
    seed = cfg.seed

    with progress:
        res, key = run.run("collect", (inputs_fp, [s.model_dump(mode="json") for s in cfg.inputs], cfg.on_error.value),
                           0, lambda: collect(cfg.inputs, cfg.on_error))
        read_by_source = dict(res.stats.get("read", {}))
        df = res.kept
        n_read = sum(read_by_source.values())
        run.steps[-1]["in"] = n_read

        res, key = run.run("clean", (key, cfg.clean.model_dump(mode="json")), df.height, lambda: clean(df, cfg.clean))
        df = res.kept

        if cfg.dedupe.exact:
            res, key = run.run("dedupe_exact", (key,), df.height, lambda: exact_duplicates(df))
            df = res.kept
        if cfg.dedupe.near.enabled:
            near = cfg.dedupe.near
            res, key = run.run("dedupe_near", (key, near.model_dump(mode="json"), seed), df.height,
                               lambda: near_duplicates(df, near, seed))
            df = res.kept
        if R.CLUSTER_ID not in df.columns:
            df = df.with_columns(pl.col("id").alias(R.CLUSTER_ID))
        if cfg.dedupe.reference:
            refs = resolve_inputs(cfg.dedupe.reference, base_dir)
            ref_fp = input_fingerprints(refs)
            near = cfg.dedupe.near

            def _reference() -> StageResult:
                texts = [_record_text(r) for spec in refs for r in read_records(spec.path)]
                return reference_duplicates(df, texts, near, seed)

            res, key = run.run("dedupe_reference", (key, ref_fp, near.model_dump(mode="json"), seed), df.height, _reference)
            df = res.kept

        dc = cfg.decontaminate
        if dc.enabled and (dc.sets or dc.suite):
            sets = resolve_inputs(dc.sets, base_dir)
            sets_fp = input_fingerprints(sets)

            def _decontaminate() -> StageResult:
                eval_sets = {spec.path: [_record_text(r) for r in read_records(spec.path)] for spec in sets}
                if dc.suite:
                    eval_sets.update(suite_eval_texts(dc.suite))
                return decontaminate(df, eval_sets, dc.ngram)

            suite_fp = _suite_fingerprint(dc.suite) if dc.suite else None
            res, key = run.run("decontaminate", (key, sets_fp, suite_fp, dc.ngram), df.height, _decontaminate)
            df = res.kept

        with progress.step("split") as step:
            df = split_records(df, cfg.split, seed)
            step.done(detail=", ".join(f"{s} {df.filter(pl.col(R.SPLIT) == s).height:,}" for s in SPLITS))
        splits = {s: df.filter(pl.col(R.SPLIT) == s) for s in SPLITS}

        mix_stats = None
        if cfg.mix.proportions:
            train = splits["train"]
            res, key = run.run("mix", (key, cfg.split.model_dump(mode="json"), cfg.mix.model_dump(mode="json"), seed),
                               train.height, lambda: mix_sources(train, cfg.mix, seed))
            splits["train"] = res.kept
            mix_stats = res.stats

        template = load_template(cfg.template.name)
        tokenizer = None
        if cfg.tokenize.enabled or template.needs_tokenizer:
            from dataforge.models import load_tokenizer

            tokenizer = load_tokenizer(cfg.tokenize.tokenizer)
        with progress.step("template") as step:
            splits = {s: apply_template(f, template, seed=seed, variants=cfg.template.variants, tokenizer=tokenizer)
                      for s, f in splits.items()}
            step.done(detail=f"{template.name} ({template.sha256[:12]})")

        tokenized, tok_info = None, None
        if cfg.tokenize.enabled:
            tokenized, tok_info, splits = _tokenize(run, splits, tokenizer, template, cfg, key, progress)

        manifest = _finish(run_dir, cfg, config_json, config_fp, state_fp, inputs_fp, run, read_by_source, splits,
                           tokenized, tok_info, template, mix_stats, progress)
    cache.prune(run.keys)
    return BuildResult(run_dir, manifest, reused=run.reused)


def _record_text(row: dict) -> str:
    """All string content of a raw record, for reference/eval matching."""
    parts = []
    for v in row.values():
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            parts.extend(_record_text(x) if isinstance(x, dict) else str(x) for x in v)
        elif isinstance(v, dict):
            parts.append(_record_text(v))
    return "\n".join(parts)


def _suite_fingerprint(suite: str) -> str:
    from dataforge.paths import evals_dir

    p = Path(suite)
    if not p.exists():
        p = evals_dir() / f"{suite}.yaml"
    if not p.exists():
        raise InputError(f"eval suite '{suite}' not found (looked for {p})", field="decontaminate.suite")
    return sha256_tree(p.parent)


def _tokenize(run: _Runner, splits: dict[str, pl.DataFrame], tokenizer, template, cfg: BuildConfig, key: str,
              progress: StepProgress):
    """Tokenize each split; only train is ever packed, so per-source eval loss stays exact."""
    import datasets

    from dataforge.data.pack import pack_best_fit
    from dataforge.data.tokenize import length_stats, tokenize_records

    tok_cfg = cfg.tokenize
    tables, info = {}, {"counts": {}, "lengths": {}, "encoded": {}, "tokenizer": tok_cfg.tokenizer, "max_length": tok_cfg.max_length,
                        "padding_side": tok_cfg.padding_side, "pad_to_multiple_of": tok_cfg.pad_to_multiple_of,
                        "train_on_inputs": tok_cfg.train_on_inputs, "overlength": tok_cfg.overlength.value,
                        "packed": tok_cfg.pack}
    kept_splits = {}
    for split, frame in splits.items():
        with progress.step(f"tokenize {split}") as step:
            result = tokenize_records(frame, tokenizer, tok_cfg, template=template)
            table = result.table
            ids = set(table.column("id").to_pylist()) if table.num_rows else set()
            kept_splits[split] = frame.filter(pl.col("id").is_in(list(ids)))
            info["counts"][split] = result.counts
            info["encoded"][split] = result.routes
            info["lengths"][split] = length_stats(result.lengths)
            if tok_cfg.pack and split == "train" and table.num_rows:
                packed = pack_best_fit(table, tok_cfg.max_length)
                info["packing"] = packed.stats
                table = packed.table
            # A fingerprint from the step's key: without one, datasets pickles the whole table to hash it.
            tables[split] = datasets.Dataset(table, fingerprint=fingerprint(key, split)[:16])
            run.rejects.append(result.rejected)
            step.done(detail=f"{table.num_rows:,} sequences")
        run.steps.append({"name": f"tokenize_{split}", "in": frame.height, "out": kept_splits[split].height,
                          "dropped": dict(result.rejected.group_by("reason").len().rows()) if result.rejected.height else {},
                          "stats": result.counts, "reused": False})
    return datasets.DatasetDict(tables), info, kept_splits


def _alpaca_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON object per record: instruction, input, output, system and history when set, source, id."""
    has_system, has_history = pl.col("system") != "", pl.col("history").list.len() > 0

    def obj(*extra: str) -> pl.Expr:
        return pl.struct("instruction", "input", "output", *extra, "source", "id").struct.json_encode()

    return frame.select(
        pl.when(has_system & has_history).then(obj("system", "history"))
        .when(has_system).then(obj("system"))
        .when(has_history).then(obj("history"))
        .otherwise(obj())
    ).to_series()


def _finish(run_dir: Path, cfg: BuildConfig, config_json: dict, config_fp: str, state_fp: str, inputs_fp: list[dict],
            run: _Runner, read_by_source: dict[str, int], splits: dict[str, pl.DataFrame], tokenized, tok_info,
            template, mix_stats, progress: StepProgress) -> dict:
    """Check the accounting, then write every output; the manifest goes last and marks the run complete."""
    rejects = pl.concat([r for r in run.rejects if r.height], how="vertical") if any(r.height for r in run.rejects) \
        else R.empty_rejects()
    kept_ids = pl.concat([f.select("id", "source") for f in splits.values()]).unique("id")
    sources = {}
    for src in sorted(set(read_by_source) | set(kept_ids["source"].unique().to_list()) |
                      set(rejects["source"].unique().to_list())):
        kept = kept_ids.filter(pl.col("source") == src).height
        rej = rejects.filter(pl.col("source") == src)
        read = read_by_source.get(src, 0)
        if read != kept + rej.height:
            raise RuntimeError(f"accounting broken for source '{src}': read {read} != kept {kept} + rejected {rej.height}")
        sources[src] = {
            "read": read, "kept": kept, "rejected": rej.height,
            "rejected_by_reason": dict(sorted(rej.group_by("reason").len().rows())),
            "by_split": {s: splits[s].filter(pl.col("source") == src).height for s in SPLITS},
        }

    with progress.step("write") as step:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST).unlink(missing_ok=True)
        for split, frame in splits.items():
            with atomic.atomic_path(run_dir / "splits" / f"{split}.parquet") as tmp:
                frame.write_parquet(tmp)
            lines = _alpaca_lines(frame)
            atomic.write_text(run_dir / "splits" / f"{split}.alpaca.jsonl", "".join(x + "\n" for x in lines))
        atomic.write_jsonl(run_dir / "rejects.jsonl", rejects.sort("stage", "source", "origin_file", "origin_line").iter_rows(named=True))
        atomic.write_jsonl(run_dir / "clusters.jsonl", run.extra.get("clusters", []))
        atomic.write_jsonl(run_dir / "contamination.jsonl", run.extra.get("contamination", []))
        if tokenized is not None:
            import datasets

            datasets.disable_progress_bars()  # our own step display covers it
            with atomic.atomic_path(run_dir / "tokenized", is_dir=True) as tmp:
                tokenized.save_to_disk(str(tmp))
        template_info = {"name": template.name, "sha256": template.sha256, "variants": cfg.template.variants}
        atomic.write_json(run_dir / "template.json", template_info)
        content = pl.concat([f.select(R.SPLIT, "content_hash") for f in splits.values()]).sort(R.SPLIT, "content_hash")
        dataset_fp = fingerprint(content.rows(), template_info, tok_info)
        manifest = {
            "kind": "build",
            "complete": True,
            "dataforge_version": __version__,
            "config": config_json,
            "config_fingerprint": config_fp,
            "state_fingerprint": state_fp,
            "fingerprint": dataset_fp,
            "inputs": inputs_fp,
            "seed": cfg.seed,
            "steps": run.steps,
            "sources": sources,
            "splits": {s: f.height for s, f in splits.items()},
            "rejected": rejects.height,
            "mix": mix_stats,
            "template": template_info,
            "tokenize": tok_info,
            "reused_steps": run.reused,
            "step_seconds": dict(progress.seconds),
            "libraries": library_versions(),
        }
        atomic.write_json(run_dir / MANIFEST, manifest)
        step.done(detail=str(run_dir))
    return manifest

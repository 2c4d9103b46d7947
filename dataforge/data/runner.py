"""Runs a list of stages: cache keys, caching, timing, progress, manifest rows, rejects, accounting.

Keys. Each enabled stage's key is the fingerprint of its name, its `settings`, the key of the stage
before it (so a change anywhere upstream reaches every stage downstream), the sha256 of every file
in its `reads`, and the code version (dataforge's version and a hash of its source). Keys depend on
no stage's output, so `plan` computes the whole chain before anything runs, at the cost of hashing
the files read; the last key stands for the whole build.

Accounting. The source stage (collect) says how many records it read per source; at the end, every
one of them must be either in the final frame or among the rejects of some stage.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataforge.data import record as R
from dataforge.data.cache import StageCache
from dataforge.data.stage import BuildContext, Stage, StageResult
from dataforge.errors import InputError, InternalError
from dataforge.util.fingerprint import fingerprint, sha256_tree
from dataforge.util.progress import StepProgress


@functools.cache
def code_version() -> str:
    """dataforge's version and a hash of every source file of the package, computed once per process:
    a change to any stage's code invalidates the cache, released or not."""
    import xxhash

    from dataforge import __version__
    from dataforge.paths import PACKAGE_DIR

    h = xxhash.xxh3_64()
    for f in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(f.relative_to(PACKAGE_DIR)).encode())
        h.update(f.read_bytes())
    return f"{__version__}+{h.hexdigest()}"


@dataclass
class PlannedStage:
    stage: Stage
    key: str
    reads: list[dict]  # {"path", "sha256"} of every file the stage reads


class FileHashes:
    """sha256 of files and folders, each computed once per build (inputs can be large)."""

    def __init__(self):
        self._seen: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        if path not in self._seen:
            if not path.exists():
                raise InputError("file does not exist", file=str(path))
            self._seen[path] = sha256_tree(path)
        return self._seen[path]


def plan(stages: list[Stage], ctx: BuildContext, hashes: FileHashes) -> list[PlannedStage]:
    """The enabled stages in order, each with its key (see the module docstring)."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InternalError(f"stage names must be unique: {names}")
    out, key = [], ""
    for stage in stages:
        if not stage.enabled(ctx):
            continue
        reads = [{"path": str(p), "sha256": hashes(p)} for p in stage.reads(ctx)]
        key = fingerprint(stage.name, stage.settings(ctx), key, [r["sha256"] for r in reads], code_version())
        out.append(PlannedStage(stage, key, reads))
    if not out or not out[0].stage.source:
        raise InternalError("the first stage of a build must be a source stage (one that reads the inputs)")
    return out


@dataclass
class Runner:
    """Runs planned stages through the cache and keeps what the manifest and the outputs need."""

    cache: StageCache
    progress: StepProgress
    steps: list[dict] = field(default_factory=list)
    rejects: list[pl.DataFrame] = field(default_factory=list)
    extra: dict[str, list[dict]] = field(default_factory=dict)
    tables: dict[str, object] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    def run(self, planned: list[PlannedStage], ctx: BuildContext) -> pl.DataFrame:
        frame = R.empty_records()
        for step in planned:
            frame = self._run_one(step, frame, ctx)
        return frame

    def _run_one(self, planned: PlannedStage, frame: pl.DataFrame, ctx: BuildContext) -> pl.DataFrame:
        stage, key = planned.stage, planned.key
        t0 = time.perf_counter()
        with self.progress.step(stage.name) as step:
            result = self._load(stage, key, frame) if stage.cached else None
            reused = result is not None
            if result is None:
                result = stage.run(frame, ctx)
                if not isinstance(result, StageResult):
                    raise InternalError(f"stage {stage.name} returned {type(result).__name__}, not a StageResult")
                if stage.cached:
                    self._save(stage, key, frame, result)
            step.done(reused=reused, detail=stage.summary(result))
        n_in = frame.height
        if stage.source:
            read = result.stats.get("read")
            if not isinstance(read, dict):
                raise InternalError(f"source stage {stage.name} must report stats['read'] (records read per source)")
            for src, n in read.items():
                self.read[src] = self.read.get(src, 0) + n
            n_in = sum(read.values())
        if reused:
            self.reused.append(stage.name)
        dropped = result.rejected.group_by("reason").len().sort("reason").rows() if result.rejected.height else []
        self.steps.append({
            "name": stage.name, "in": n_in, "out": result.kept.height, "dropped": dict(dropped),
            "seconds": round(time.perf_counter() - t0, 3), "reused": reused, "key": planned.key,
            **({"reads": planned.reads} if planned.reads else {}),
            **({"stats": result.stats} if result.stats else {}),
        })
        self.stats[stage.name] = result.stats
        self.rejects.append(result.rejected)
        for name, rows in result.extra.items():
            self.extra.setdefault(name, []).extend(rows)
        self.tables.update(result.tables)
        return result.kept

    def _load(self, stage: Stage, key: str, frame: pl.DataFrame) -> StageResult | None:
        result = self.cache.load(stage.name, key)
        if result is not None and stage.adds:
            result.kept = frame.with_columns(result.kept.get_columns())
        return result

    def _save(self, stage: Stage, key: str, frame: pl.DataFrame, result: StageResult) -> None:
        if result.tables:
            raise InternalError(f"stage {stage.name} publishes tables, which the cache does not store; "
                                "declare it `cached = False`")
        if stage.adds:
            if result.kept.height != frame.height:
                raise InternalError(f"stage {stage.name} declares `adds` but returned {result.kept.height} rows "
                                    f"for {frame.height}")
            result = StageResult(kept=result.kept.select([c for c in result.kept.columns if c in stage.adds]),
                                 rejected=result.rejected, extra=result.extra, stats=result.stats)
        self.cache.save(stage.name, key, result)

    def all_rejects(self) -> pl.DataFrame:
        parts = [r for r in self.rejects if r.height]
        return pl.concat(parts, how="vertical") if parts else R.empty_rejects()

    def accounting(self, frame: pl.DataFrame, rejects: pl.DataFrame, splits: tuple[str, ...]) -> dict[str, dict]:
        """Per-source counts (with records per split); raises InternalError unless, per source,
        records read (+ the copies a mix up-sampling made, `<id>#rep<k>`: `repeated`) = records kept +
        records rejected; a copy is kept or rejected downstream like any record."""
        kept_ids = frame.select("id", "source").unique("id")
        repeated = (self.stats.get("mix") or {}).get("repeated") or {}
        sources = {}
        for src in sorted(set(self.read) | set(kept_ids["source"].unique().to_list()) |
                          set(rejects["source"].unique().to_list())):
            kept = kept_ids.filter(pl.col("source") == src).height
            rej = rejects.filter(pl.col("source") == src)
            read = self.read.get(src, 0)
            if read + repeated.get(src, 0) != kept + rej.height:
                raise InternalError(f"accounting broken for source '{src}': read {read} + repeated "
                                    f"{repeated.get(src, 0)} != kept {kept} + rejected {rej.height}")
            per_split = dict(frame.filter(pl.col("source") == src).group_by(R.SPLIT).len().iter_rows())
            sources[src] = {
                "read": read, "kept": kept, "rejected": rej.height,
                "rejected_by_reason": dict(sorted(rej.group_by("reason").len().rows())),
                "by_split": {s: per_split.get(s, 0) for s in splits},
                **({"repeated": repeated[src]} if repeated.get(src) else {}),
            }
        return sources

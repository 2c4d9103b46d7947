"""The stage contract: what a build stage declares, and what it returns.

The work of a stage is a pure function over a polars frame (`clean`, `near_duplicates`,
`split_records`, ...) returning a `StageResult`; it never mutates its input and holds no state. A
`Stage` wraps such a function for the build and declares what the runner needs to know about it:
its name, the config it reads (`settings`), the files it reads (`reads`: their content goes into
its cache key) and whether it runs at all. The runner (dataforge.data.runner) owns everything else:
cache keys, caching, timing, progress, manifest rows, rejects and the accounting. The build is one
ordered list of stages (dataforge.data.stages.BUILD_STAGES).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from dataforge.data.record import REJECT_SCHEMA, empty_rejects

if TYPE_CHECKING:
    import pyarrow as pa

    from dataforge.config.build import BuildConfig, InputSpec
    from dataforge.data.templates import Template

RECORD_JSON_CAP = 2000


@dataclass
class StageResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame = field(default_factory=empty_rejects)
    # Side outputs a stage wants written (e.g. clusters, contamination spans): name -> rows.
    extra: dict[str, list[dict]] = field(default_factory=dict)
    # Stage-specific statistics for the manifest (e.g. achieved mix proportions).
    stats: dict = field(default_factory=dict)
    # Arrow tables a stage publishes beside the records (tokenize: one per split), by name.
    tables: dict[str, pa.Table] = field(default_factory=dict)


@dataclass
class BuildContext:
    """What stages share in one build: the validated config, the folder relative paths resolve
    against, and the template and tokenizer, each loaded once and only when a stage asks."""

    cfg: BuildConfig
    base_dir: Path | None = None

    def resolve(self, specs: list[InputSpec]) -> list[InputSpec]:
        """Input specs with `demo:` names and relative paths resolved (see paths.resolve_data_path)."""
        from dataforge.paths import resolve_data_path

        return [spec.model_copy(update={"path": resolve_data_path(spec.path, self.base_dir)}) for spec in specs]

    def local_files(self, specs: list[InputSpec]) -> list[Path]:
        """The local files and folders of `specs` (hub ids have none); a missing path is an InputError."""
        from dataforge.errors import InputError
        from dataforge.paths import is_hub_id

        out = []
        for spec in self.resolve(specs):
            if Path(spec.path).exists():
                out.append(Path(spec.path))
            elif not is_hub_id(spec.path):
                raise InputError("file does not exist", file=spec.path)
        return out

    @cached_property
    def template(self) -> Template:
        from dataforge.data.templates import load_template

        return load_template(self.cfg.template.name)

    @cached_property
    def tokenizer(self) -> Any:
        from dataforge.models import load_tokenizer

        return load_tokenizer(self.cfg.tokenize.tokenizer)

    @cached_property
    def tokenizer_files(self) -> list[Path]:
        from dataforge.models import tokenizer_files

        return tokenizer_files(self.cfg.tokenize.tokenizer)


class Stage:
    """One step of the build. A subclass sets `name` and `section` and implements `run`; adding a
    stage to the build is one such class plus one entry in `BUILD_STAGES`.

    The cache key of a stage is derived by the runner from `settings` (the config it reads), the
    key of its input, the content of every file in `reads`, and the dataforge code version, so a
    stage's key changes exactly when something that can change its output does.
    """

    name: ClassVar[str]
    section: ClassVar[str]          # the config section it reads, e.g. "clean" or "dedupe.near"
    source: ClassVar[bool] = False  # reads records from outside (its stats["read"]: records read per source)
    cached: ClassVar[bool] = True   # False: recomputing is as cheap as reading the output back
    # Non-empty: the stage keeps every input row, in order, and only adds (or replaces) these columns,
    # so the cache stores just them.
    adds: ClassVar[tuple[str, ...]] = ()

    def enabled(self, ctx: BuildContext) -> bool:
        return True

    def settings(self, ctx: BuildContext) -> dict:
        """Every config value `run` uses; by default its section."""
        return {self.section: config_value(ctx.cfg, self.section)}

    def reads(self, ctx: BuildContext) -> list[Path]:
        """Every file (or folder) whose content `run` reads besides its input frame."""
        return []

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        raise NotImplementedError

    def summary(self, result: StageResult) -> str:
        """One line for the progress display."""
        return f"{result.kept.height:,} kept, {result.rejected.height:,} dropped"


def config_value(cfg: Any, dotted: str) -> Any:
    """The JSON form of the config value at a dotted path (`dedupe.near` -> cfg.dedupe.near)."""
    from pydantic_core import to_jsonable_python

    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return to_jsonable_python(value)


def make_rejects(rows: pl.DataFrame, stage: str, reason: str | pl.Expr, detail: str | pl.Expr) -> pl.DataFrame:
    """Turn dropped records into reject rows, keeping their id, source and origin."""
    if rows.height == 0:
        return empty_rejects()
    record_cols = [c for c in ("system", "history", "instruction", "input", "output", "tools", "tool_turns", "kind",
                               "rejected", "kto_label") if c in rows.columns]
    records = [json.dumps(r, ensure_ascii=False, default=str)[:RECORD_JSON_CAP] for r in rows.select(record_cols).to_dicts()]
    reason_e = pl.lit(reason) if isinstance(reason, str) else reason
    detail_e = pl.lit(detail) if isinstance(detail, str) else detail
    out = rows.select(
        pl.lit(stage).alias("stage"),
        reason_e.alias("reason"),
        detail_e.alias("detail"),
        pl.col("id"), pl.col("source"), pl.col("origin_file"), pl.col("origin_line"),
    ).with_columns(pl.Series("record", records, dtype=pl.Utf8))
    return out.select(list(REJECT_SCHEMA)).cast(REJECT_SCHEMA)

"""What every build stage returns.

A stage is a pure function `(records: pl.DataFrame, cfg, ...) -> StageResult`. It never mutates its
input and holds no state; the pipeline runner owns counting, timing, caching and progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

from dataforge.data.record import REJECT_SCHEMA, empty_rejects

RECORD_JSON_CAP = 2000


@dataclass
class StageResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame = field(default_factory=empty_rejects)
    # Side outputs a stage wants written (e.g. clusters, contamination spans): name -> rows.
    extra: dict[str, list[dict]] = field(default_factory=dict)
    # Stage-specific statistics for the manifest (e.g. achieved mix proportions).
    stats: dict = field(default_factory=dict)


def make_rejects(rows: pl.DataFrame, stage: str, reason: str | pl.Expr, detail: str | pl.Expr) -> pl.DataFrame:
    """Turn dropped records into reject rows, keeping their id, source and origin."""
    if rows.height == 0:
        return empty_rejects()
    record_cols = [c for c in ("system", "history", "instruction", "input", "output", "tools", "tool_turns", "kind")
                   if c in rows.columns]
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

"""Mix named sources into the train split at target proportions.

Targets: proportions are weights (normalized to sum to 1). The train size is `mix.total`, or by
default the largest size reachable without repeating a record: min over sources of
records / share, so the scarcest source relative to its share is kept whole. Each source's target
count is total x share, rounded by largest remainders so the counts sum to the total exactly, and
the achieved share differs from the target only by that rounding (< 1 / total).

Down-sampling keeps the records with the lowest xxh3_64(content hash, seed) (the record id when
there is no content hash), ties by id: a seeded order that does not depend on input order, and
that keeps a smaller sample inside a larger one. Dropped records are rejected with stage `mix`,
reason `downsampled`, and sources that are not named are rejected with reason `not_in_mix`, so
every train record is accounted for.

Up-sampling (only when `mix.total` asks for more records than a source has): every record of the
source is kept, and the source is repeated whole as often as needed plus its first records in the
same seeded order; repeats get the id `<id>#rep<k>` so ids stay unique. Then
records in + repeated = kept + rejected, with `stats["repeated"]` the copies made per source (the
build's accounting counts them so; a copy is kept or rejected downstream like any record).

A named source with a positive share but no train records is a config error
(`mix.proportions.<name>`): the mix it asks for cannot be built.
"""

from __future__ import annotations

import polars as pl

from dataforge.config.build import MixConfig
from dataforge.data.record import CONTENT_HASH, empty_rejects
from dataforge.data.split import apportion, seeded_draws
from dataforge.data.stage import StageResult, make_rejects
from dataforge.errors import ConfigError

STAGE = "mix"


def mix_sources(train: pl.DataFrame, cfg: MixConfig, seed: int) -> StageResult:
    """The train split re-sampled to `cfg.proportions`; see the module doc for the rules."""
    have = dict(train.group_by("source").len().iter_rows())
    plan = mix_targets(have, cfg)
    if plan is None:
        return StageResult(kept=train, stats={"target": {}, "total": 0, "counts": {}, "achieved": {}, "repeated": {}})
    share, total, target = plan

    ordered = _seeded_order(train, seed)
    kept, rejected, repeated = [], [], {}
    for source in sorted(have):
        rows = ordered.filter(pl.col("source") == source)
        if source not in target:
            rejected.append(make_rejects(rows, STAGE, "not_in_mix", f"source '{source}' is not in mix.proportions"))
            continue
        want, n = target[source], rows.height
        if want <= n:
            kept.append(rows.head(want))
            rejected.append(make_rejects(rows.slice(want), STAGE, "downsampled",
                                         downsample_detail(source, want, n, share[source], total)))
        else:
            kept.append(rows)
            kept.extend(_repeat(rows, k, n if k < want // n else want % n) for k in range(1, -(-want // n)))
            repeated[source] = want - n
    out = pl.concat(kept).sort("_row", maintain_order=True) if kept else ordered.clear()
    achieved = dict(out.group_by("source").len().iter_rows())
    stats = {"target": share, "total": out.height,
             "counts": {s: achieved.get(s, 0) for s in share},
             "achieved": {s: achieved.get(s, 0) / out.height if out.height else 0.0 for s in share},
             "repeated": repeated}
    return StageResult(kept=out.drop("_row", "_order"), rejected=pl.concat(rejected) if rejected else empty_rejects(),
                       stats=stats)


def mix_targets(have: dict[str, int], cfg: MixConfig) -> tuple[dict[str, float], int, dict[str, int]] | None:
    """(share, total, target count) per source from the train records per source, or None when
    there is nothing to mix; shared by every engine, which only needs these counts."""
    weights = dict(cfg.proportions) or {s: float(n) for s, n in have.items()}
    missing = sorted(s for s, w in weights.items() if w > 0 and not have.get(s))
    if missing:
        present = ", ".join(sorted(have)) or "none"
        raise ConfigError([f"mix.proportions.{s}: source '{s}' has no records in the train split "
                           f"(sources there: {present})" for s in missing])
    if not weights:
        return None
    norm = sum(weights.values())
    share = {s: w / norm for s, w in weights.items()}
    total = cfg.total or int(min(have[s] / p for s, p in share.items() if p > 0) + 1e-9)
    return share, total, apportion(total, share)


def downsample_detail(source: str, want: int, n: int, share: float, total: int) -> str:
    return (f"source '{source}': {want} of {n} records kept for a share of "
            f"{share:.4f} of {total} train records")


def _seeded_order(train: pl.DataFrame, seed: int) -> pl.DataFrame:
    order = seeded_draws(train.get_column(CONTENT_HASH if CONTENT_HASH in train.columns else "id"), seed)
    return train.with_row_index("_row").with_columns(pl.Series("_order", order, dtype=pl.UInt64)).sort("_order", "id")


def _repeat(rows: pl.DataFrame, k: int, count: int) -> pl.DataFrame:
    """The k-th extra copy of the first `count` rows, with ids made unique."""
    return rows.head(count).with_columns((pl.col("id") + f"#rep{k}").alias("id"))

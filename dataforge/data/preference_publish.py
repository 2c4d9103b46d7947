"""What a preference build publishes beside the tokenized tables: split files and the manifest's counts.

Split files name the answers for what they are: `chosen` and `rejected` (KTO: `completion` and
`kto_label`) instead of the build's internal `output`, with the rendered `prompt` when the template
ran. The manifest's `preference` section explains how source records became pairs: per source, the
records read and the pairs drawn from them (a ranked record with K completions gives C(K,2), K-1 or
1 pairs, see dataforge.data.preference), and per split the pairs and distinct prompts.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from dataforge.config.build import BuildConfig, InputFormat
from dataforge.data import record as R
from dataforge.data.runner import Runner

DROP = (R.RESPONSE, R.REJECTED_RESPONSE, "tools", "tool_turns", "kind")


def publish_columns(part: pl.DataFrame, kto: bool) -> pl.DataFrame:
    """The split as published: answers renamed, template internals left out."""
    if kto:
        out = part.rename({"output": "completion"}).drop(R.REJECTED)
    else:
        out = part.rename({"output": "chosen"}).drop(R.KTO_LABEL)
    return out.drop([c for c in DROP if c in out.columns])


def preference_lines(part: pl.DataFrame) -> Iterator[dict]:
    """One JSON object per pair: ids, source, the prompt's fields, the rendered prompt, the answers."""
    keep = [c for c in ("id", "prompt_id", "source", "system", "history", "instruction", "input", R.PROMPT,
                        "chosen", "rejected", "completion", R.KTO_LABEL, R.SPLIT) if c in part.columns]
    yield from part.select(keep).iter_rows(named=True)


def preference_summary(frame: pl.DataFrame, runner: Runner, splits: tuple[str, ...], cfg: BuildConfig) -> dict:
    """The manifest's `preference` section (frame: the last stage's pairs, with `split`)."""
    kto = any(spec.format is InputFormat.kto for spec in cfg.inputs)
    collect = runner.stats.get("collect") or {}
    by_split = {}
    for s in splits:
        part = frame.filter(pl.col(R.SPLIT) == s)
        row = {"pairs" if not kto else "examples": part.height, "prompts": part[R.PROMPT_ID].n_unique() if part.height else 0}
        if kto:
            row["desirable"] = int(part[R.KTO_LABEL].sum() or 0)
        by_split[s] = row
    return {
        "unit": "example" if kto else "pair",
        "kind": "kto" if kto else "pairs",
        "rules": cfg.preference.model_dump(mode="json"),
        "records": collect.get("records", {}),
        "read": dict(runner.read),
        "by_split": by_split,
        "note": "sources[...] counts are in pairs (KTO: examples): read = kept + rejected per source; a record "
                "that yields K pairs counts K read, a record that yields none counts 1 read, rejected once",
    }

"""The build's stages, in order: `BUILD_STAGES` is the one place the order is written down.

Each class wraps one pure stage function (dataforge/data/<stage>.py) and declares what the runner
needs: its config (`settings`), the files it reads (`reads`), and whether it runs. The frame that
flows from stage to stage is one polars frame of records; from `split` on it has a `split` column,
and `mix` resamples only the train rows. To add a stage, write its function and its `Stage` class
(one module) and put an instance in `BUILD_STAGES`; the docs tests check the documented order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dataforge.config.build import TrainTurns
from dataforge.data import record as R
from dataforge.data.stage import BuildContext, Stage, StageResult

SPLITS = ("train", "val", "test")


class Collect(Stage):
    name, section, source = "collect", "inputs", True

    def settings(self, ctx: BuildContext) -> dict:
        return {"inputs": [s.model_dump(mode="json") for s in ctx.resolve(ctx.cfg.inputs)],
                "on_error": ctx.cfg.on_error.value}

    def reads(self, ctx: BuildContext) -> list[Path]:
        return ctx.local_files(ctx.cfg.inputs)

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.collect import collect

        return collect(ctx.resolve(ctx.cfg.inputs), ctx.cfg.on_error)


class Clean(Stage):
    name, section = "clean", "clean"

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.clean import clean

        return clean(frame, ctx.cfg.clean)


class ExactDedupe(Stage):
    name, section = "dedupe_exact", "dedupe.exact"

    def enabled(self, ctx: BuildContext) -> bool:
        return ctx.cfg.dedupe.exact

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.dedupe import exact_duplicates

        return exact_duplicates(frame)


class NearDedupe(Stage):
    name, section = "dedupe_near", "dedupe.near"

    def enabled(self, ctx: BuildContext) -> bool:
        return ctx.cfg.dedupe.near.enabled

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.dedupe import near_duplicates

        near = ctx.cfg.dedupe.near
        return near_duplicates(frame, near, near.seed)


class ReferenceDedupe(Stage):
    name, section = "dedupe_reference", "dedupe.reference"

    def enabled(self, ctx: BuildContext) -> bool:
        return bool(ctx.cfg.dedupe.reference)

    def settings(self, ctx: BuildContext) -> dict:
        return {"reference": [s.model_dump(mode="json") for s in ctx.resolve(ctx.cfg.dedupe.reference)],
                "near": ctx.cfg.dedupe.reference_settings.model_dump(mode="json")}

    def reads(self, ctx: BuildContext) -> list[Path]:
        return ctx.local_files(ctx.cfg.dedupe.reference)

    def texts(self, ctx: BuildContext) -> list[str]:
        """The reference texts, read once per build."""
        from dataforge.data.io.readers import read_records

        return [record_text(r) for spec in ctx.resolve(ctx.cfg.dedupe.reference)
                for r in read_records(spec.path, split=spec.split, subset=spec.subset)]

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.dedupe import reference_duplicates

        near = ctx.cfg.dedupe.reference_settings
        return reference_duplicates(frame, self.texts(ctx), near, near.seed)


class Decontaminate(Stage):
    name, section = "decontaminate", "decontaminate"

    def enabled(self, ctx: BuildContext) -> bool:
        dc = ctx.cfg.decontaminate
        return dc.enabled and bool(dc.sets or dc.suite)

    def settings(self, ctx: BuildContext) -> dict:
        dc = ctx.cfg.decontaminate
        return {"sets": [s.model_dump(mode="json") for s in ctx.resolve(dc.sets)], "suite": dc.suite, "ngram": dc.ngram}

    def reads(self, ctx: BuildContext) -> list[Path]:
        from dataforge.data.decontaminate import suite_files

        dc = ctx.cfg.decontaminate
        return ctx.local_files(dc.sets) + (suite_files(dc.suite) if dc.suite else [])

    def eval_sets(self, ctx: BuildContext) -> dict[str, list[str]]:
        """Eval set name -> its texts, read once per build."""
        from dataforge.data.decontaminate import suite_eval_texts
        from dataforge.data.io.readers import read_records

        dc = ctx.cfg.decontaminate
        eval_sets = {spec.path: [record_text(r) for r in read_records(spec.path, split=spec.split, subset=spec.subset)]
                     for spec in ctx.resolve(dc.sets)}
        if dc.suite:
            eval_sets.update(suite_eval_texts(dc.suite))
        return eval_sets

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.decontaminate import decontaminate

        return decontaminate(frame, self.eval_sets(ctx), ctx.cfg.decontaminate.ngram)


class Split(Stage):
    name, section, adds = "split", "split", (R.CLUSTER_ID, R.SPLIT)

    def settings(self, ctx: BuildContext) -> dict:
        return {"split": ctx.cfg.split.model_dump(mode="json"), "seed": ctx.cfg.seed}

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.split import split_records

        if R.CLUSTER_ID not in frame.columns:  # without near-dedupe, every record is its own cluster
            frame = frame.with_columns(pl.col("id").alias(R.CLUSTER_ID))
        return StageResult(kept=split_records(frame, ctx.cfg.split, ctx.cfg.seed))

    def summary(self, result: StageResult) -> str:
        sizes = dict(result.kept.group_by(R.SPLIT).len().iter_rows())
        return ", ".join(f"{s} {sizes.get(s, 0):,}" for s in SPLITS)


class Mix(Stage):
    """Resamples the train rows to the target proportions; val and test pass through untouched."""

    name, section = "mix", "mix"

    def enabled(self, ctx: BuildContext) -> bool:
        return bool(ctx.cfg.mix.proportions)

    def settings(self, ctx: BuildContext) -> dict:
        return {"mix": ctx.cfg.mix.model_dump(mode="json"), "seed": ctx.cfg.seed}

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.mix import mix_sources

        train = pl.col(R.SPLIT) == "train"
        result = mix_sources(frame.filter(train), ctx.cfg.mix, ctx.cfg.seed)
        result.kept = pl.concat([result.kept, frame.filter(~train)])
        return result


class Template(Stage):
    name, section, adds = "template", "template", (R.TEMPLATE_VARIANT, R.PROMPT, R.RESPONSE, R.ASSISTANT_SPANS)

    def settings(self, ctx: BuildContext) -> dict:
        out = {"template": ctx.cfg.template.model_dump(mode="json"), "seed": ctx.cfg.seed,
               "train_turns": self.train_turns(ctx).value}
        if ctx.template.needs_tokenizer:
            out["tokenizer"] = ctx.cfg.tokenize.tokenizer
        return out

    def reads(self, ctx: BuildContext) -> list[Path]:
        return [ctx.template.path, *(ctx.tokenizer_files if ctx.template.needs_tokenizer else [])]

    def train_turns(self, ctx: BuildContext) -> TrainTurns:
        return ctx.cfg.tokenize.train_turns

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.turns import render_records

        template, think = ctx.template, ctx.cfg.template.think
        kept = render_records(frame, template, ctx.tokenizer if template.needs_tokenizer else None, seed=ctx.cfg.seed,
                              variants=ctx.cfg.template.variants, think=think, train_turns=self.train_turns(ctx))
        return StageResult(kept=kept, stats={"name": template.name, "sha256": template.sha256, "think": think.value})

    def summary(self, result: StageResult) -> str:
        return f"{result.stats['name']} ({result.stats['sha256'][:12]})"


class Tokenize(Stage):
    """Tokenizes each split; only train is ever packed, so per-source eval loss stays exact. Not
    cached: its output is as large as the published `tokenized/` folder and takes about as long to
    read back as to recompute."""

    name, section, cached = "tokenize", "tokenize", False

    def enabled(self, ctx: BuildContext) -> bool:
        return ctx.cfg.tokenize.enabled

    def settings(self, ctx: BuildContext) -> dict:
        return {"tokenize": ctx.cfg.tokenize.model_dump(mode="json")}

    def reads(self, ctx: BuildContext) -> list[Path]:
        return ctx.tokenizer_files

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.pack import pack_best_fit
        from dataforge.data.tokenize import length_stats, tokenize_records

        cfg = ctx.cfg.tokenize
        stats: dict = {"counts": {}, "lengths": {}, "encoded": {}}
        kept, rejected, tables = [], [], {}
        for split in SPLITS:
            part = frame.filter(pl.col(R.SPLIT) == split)
            result = tokenize_records(part, ctx.tokenizer, cfg, template=ctx.template, think=ctx.cfg.template.think)
            table = result.table
            kept.append(part.filter(pl.col("id").is_in(table.column("id").to_pylist())) if result.rejected.height else part)
            rejected.append(result.rejected)
            stats["counts"][split] = result.counts
            stats["encoded"][split] = result.routes
            stats["lengths"][split] = length_stats(result.lengths)
            if cfg.pack and split == "train" and table.num_rows:
                packed = pack_best_fit(table, cfg.max_length)
                stats["packing"] = packed.stats
                table = packed.table
            tables[split] = table
        return StageResult(kept=pl.concat(kept), rejected=pl.concat(rejected), stats=stats, tables=tables)

    def summary(self, result: StageResult) -> str:
        return ", ".join(f"{s} {t.num_rows:,}" for s, t in result.tables.items()) + " sequences"


BUILD_STAGES: list[Stage] = [
    Collect(), Clean(), ExactDedupe(), NearDedupe(), ReferenceDedupe(), Decontaminate(), Split(), Mix(), Template(),
    Tokenize(),
]


def record_text(row: dict) -> str:
    """All string content of a raw record, for reference/eval matching."""
    parts = []
    for v in row.values():
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            parts.extend(record_text(x) if isinstance(x, dict) else str(x) for x in v)
        elif isinstance(v, dict):
            parts.append(record_text(v))
    return "\n".join(parts)

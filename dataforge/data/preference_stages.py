"""The preference build's stages (task: preference): the SFT stages, applied to pairs by the prompt.

A row of the frame is one pair (`output` its chosen answer, `rejected` the other) or one KTO example
(`kto_label` set). The stages are the SFT build's (dataforge.data.stages), with these differences:

- clean judges and normalizes the chosen and the rejected answer alike (a pair goes if either fails),
  drops pairs whose answers are identical once cleaned (`identical_pair`) and pairs that another pair
  of the same prompt contradicts (`conflicting_pair`: both directions go), and adds `prompt_id`, the
  hash of the normalized prompt (system, history, instruction, input, tools); `content_hash` covers
  the prompt, both answers and the KTO label, so exact dedupe drops only repeated pairs.
- near dedupe, reference dedupe and decontaminate look at the prompts only: each distinct prompt is
  judged once (its answers left out) and the verdict applies to every pair of that prompt, so a
  prompt with several pairs is never a duplicate of itself, and a contaminated prompt loses all its
  pairs. Their side files (clusters, contamination) name prompts by `prompt_id`.
- split groups pairs by prompt (or by near-duplicate cluster of prompts), so all pairs of one prompt
  land in one split.
- template renders the prompt once and both answers; tokenize encodes prompt + chosen and prompt +
  rejected as an SFT record each (labels -100 on the prompt, truncation keeps the instruction), and
  drops the pair when either side is dropped. KTO rows are tokenized as one sequence with `kto_label`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from dataforge.config.build import BuildConfig, InputFormat, TrainTurns
from dataforge.data import record as R
from dataforge.data.stage import BuildContext, Stage, StageResult, make_rejects
from dataforge.data.stages import (
    SPLITS,
    Clean,
    Collect,
    Decontaminate,
    ExactDedupe,
    Mix,
    NearDedupe,
    ReferenceDedupe,
    Split,
    Template,
    Tokenize,
)
from dataforge.errors import InternalError

# The tokenized tables' columns: what DPO/reward (pairs) and KTO training read.
PAIR_COLUMNS = ("id", "prompt_id", "source", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
KTO_COLUMNS = ("id", "prompt_id", "source", "input_ids", "labels", "kto_label")
PROMPT_FIELDS = ("system", "history", "instruction", "input")


def is_kto(cfg: BuildConfig) -> bool:
    return any(spec.format is InputFormat.kto for spec in cfg.inputs)


class PairCollect(Collect):
    def settings(self, ctx: BuildContext) -> dict:
        return {**super().settings(ctx), "preference": ctx.cfg.preference.model_dump(mode="json")}

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.collect import collect

        return collect(ctx.resolve(ctx.cfg.inputs), ctx.cfg.on_error, preference=ctx.cfg.preference)


class PairClean(Clean):
    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.clean import clean

        chosen = clean(frame, ctx.cfg.clean)
        rejects = [_name_side(chosen.rejected, "chosen")]
        kept = chosen.kept
        if not is_kto(ctx.cfg):
            rejected = clean(frame.with_columns(pl.col(R.REJECTED).alias("output")), ctx.cfg.clean)
            cleaned = rejected.kept.select("id", pl.col("output").alias("_rejected"))
            both = kept.join(cleaned, on="id", how="inner", maintain_order="left")
            rejects.append(_name_side(rejected.rejected.filter(pl.col("id").is_in(kept["id"].implode())), "rejected"))
            kept = both.with_columns(pl.col("_rejected").alias(R.REJECTED)).drop("_rejected")
            same = kept["output"] == kept[R.REJECTED]
            rejects.append(make_rejects(kept.filter(same), self.name, "identical_pair",
                                        "the chosen and the rejected answer are the same text once cleaned"))
            kept = kept.filter(~same)
        kept = kept.with_columns(pl.Series(R.PROMPT_ID, prompt_hashes(kept), dtype=pl.Utf8))
        if not is_kto(ctx.cfg):
            kept, conflicts = _drop_conflicts(kept, self.name)
            rejects.append(conflicts)
        kept = kept.with_columns(pl.Series(R.CONTENT_HASH, pair_hashes(kept), dtype=pl.Utf8))
        return StageResult(kept=kept, rejected=pl.concat(rejects), stats=chosen.stats)


def _drop_conflicts(pairs: pl.DataFrame, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pairs contradicted by another pair of the same prompt (A over B and B over A, e.g. two raters who
    disagree) are dropped, all of them: trained together they cancel out, and no rule here can tell
    which rating is right."""
    sep = pl.lit("\x00")
    forward = pl.concat_str(pl.col(R.PROMPT_ID), sep, pl.col("output"), sep, pl.col(R.REJECTED))
    backward = pl.concat_str(pl.col(R.PROMPT_ID), sep, pl.col(R.REJECTED), sep, pl.col("output"))
    keys = pairs.select(forward.alias("f"), backward.alias("b"))
    clash = keys["b"].is_in(keys["f"].implode())
    rejected = make_rejects(pairs.filter(clash), stage, "conflicting_pair",
                            "another pair of the same prompt prefers the other answer")
    return pairs.filter(~clash), rejected


def _name_side(rejects: pl.DataFrame, side: str) -> pl.DataFrame:
    """Reject details that say which answer failed: the clean stage calls either one `output`."""
    return rejects.with_columns(pl.concat_str(pl.lit(f"{side} answer: "),
                                              pl.col("detail").str.replace_all("'output'", f"'{side}'", literal=True)).alias("detail"))


def prompt_hashes(pairs: pl.DataFrame) -> list[str]:
    """The content hash of each pair's prompt alone: equal exactly when the normalized prompts are."""
    from dataforge.data.clean import content_hashes

    return content_hashes(pairs.with_columns(pl.lit("").alias("output")))


def pair_hashes(pairs: pl.DataFrame) -> list[str]:
    """xxh3_64 of (prompt hash, chosen, rejected, label), length-prefixed so no two pairs collide by framing."""
    keys = pairs.select(pl.concat_str([
        pl.col(R.PROMPT_ID), pl.lit(":"),
        pl.col("output").str.len_chars().cast(pl.Utf8), pl.lit(":"), pl.col("output"),
        pl.col(R.REJECTED).str.len_chars().cast(pl.Utf8), pl.lit(":"), pl.col(R.REJECTED),
        pl.col(R.KTO_LABEL).cast(pl.Utf8).fill_null("-"),
    ])).to_series()
    return [xxhash.xxh3_64_hexdigest(k.encode("utf-8")) for k in keys]


def by_prompt(pairs: pl.DataFrame, stage: str, judge: Callable[[pl.DataFrame], StageResult]) -> StageResult:
    """Run a record-level `judge` over the distinct prompts (answers blanked, id = prompt_id) and apply its
    verdict to every pair of each prompt; columns it adds (cluster_id) are joined onto the pairs."""
    prompts = pairs.unique(R.PROMPT_ID, keep="first", maintain_order=True).with_columns(
        pl.col(R.PROMPT_ID).alias("id"), pl.lit("").alias("output"), pl.lit("").alias(R.REJECTED))
    result = judge(prompts)
    added = [c for c in result.kept.columns if c not in pairs.columns]
    kept = pairs.join(result.kept.select(R.PROMPT_ID, *added), on=R.PROMPT_ID, how="inner", maintain_order="left")
    verdicts = result.rejected.select(pl.col("id").alias(R.PROMPT_ID), "reason", pl.col("detail").alias("_detail"))
    lost = pairs.join(verdicts, on=R.PROMPT_ID, how="inner", maintain_order="left")
    rejected = make_rejects(lost, stage, pl.col("reason"), pl.format("prompt {}: {}", pl.col(R.PROMPT_ID), pl.col("_detail")))
    if kept.height + lost.height != pairs.height:
        raise InternalError(f"{stage}: {pairs.height} pairs became {kept.height} kept + {lost.height} rejected")
    stats = {**result.stats, "prompts": prompts.height}
    if "by_source" in stats:   # in pairs, as the build summary and its warnings read them
        seen = dict(pairs["source"].value_counts().iter_rows())
        gone = dict(lost["source"].value_counts().iter_rows()) if lost.height else {}
        stats["by_source"] = {src: {**row, "in": seen.get(src, 0), "removed": gone.get(src, 0)}
                              for src, row in stats["by_source"].items()}
    return StageResult(kept=kept, rejected=rejected, extra=result.extra, stats=stats)


def _prompt_fields(fields: list[str]) -> list[str]:
    return [f for f in fields if f in PROMPT_FIELDS] or ["instruction"]


class PromptNearDedupe(NearDedupe):
    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.dedupe import near_duplicates

        near = ctx.cfg.dedupe.near
        near = near.model_copy(update={"fields": _prompt_fields(near.fields)})
        return by_prompt(frame, self.name, lambda prompts: near_duplicates(prompts, near, near.seed))


class PromptReferenceDedupe(ReferenceDedupe):
    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.dedupe import reference_duplicates
        from dataforge.data.io.readers import read_records
        from dataforge.data.stages import record_text

        texts = [record_text(r) for spec in ctx.resolve(ctx.cfg.dedupe.reference)
                 for r in read_records(spec.path, split=spec.split, subset=spec.subset)]
        near = ctx.cfg.dedupe.reference_settings
        near = near.model_copy(update={"fields": _prompt_fields(near.fields)})
        return by_prompt(frame, self.name, lambda prompts: reference_duplicates(prompts, texts, near, near.seed))


class PromptDecontaminate(Decontaminate):
    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        base = super().run
        return by_prompt(frame, self.name, lambda prompts: base(prompts, ctx))


class PromptSplit(Split):
    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        if R.CLUSTER_ID not in frame.columns:  # without near-dedupe, each prompt is its own cluster
            frame = frame.with_columns(pl.col(R.PROMPT_ID).alias(R.CLUSTER_ID))
        return super().run(frame, ctx)


class PairTemplate(Template):
    adds = (R.TEMPLATE_VARIANT, R.PROMPT, R.RESPONSE, R.REJECTED_RESPONSE)

    def train_turns(self, ctx: BuildContext) -> TrainTurns:
        """Earlier turns are the prompt both answers are judged against, never trained."""
        return TrainTurns.last

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        result = super().run(frame, ctx)
        if is_kto(ctx.cfg):
            rejected = pl.Series(R.REJECTED_RESPONSE, [""] * frame.height, dtype=pl.Utf8)
        else:
            other = super().run(frame.with_columns(pl.col(R.REJECTED).alias("output")), ctx).kept
            if not other[R.PROMPT].equals(result.kept[R.PROMPT]):
                raise InternalError("the template rendered a pair's prompt differently for its two answers")
            rejected = other[R.RESPONSE].alias(R.REJECTED_RESPONSE)
        result.kept = result.kept.with_columns(rejected)
        return result


class PairTokenize(Tokenize):
    """Tokenizes each split's pairs (or KTO rows); never packed."""

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        from dataforge.data.tokenize import length_stats, tokenize_records

        cfg, kto = ctx.cfg.tokenize.model_copy(update={"train_turns": TrainTurns.last}), is_kto(ctx.cfg)
        think = ctx.cfg.template.think
        stats: dict = {"counts": {}, "lengths": {}}
        kept, rejected, tables = [], [], {}
        for split in SPLITS:
            part = frame.filter(pl.col(R.SPLIT) == split)
            chosen = tokenize_records(part, ctx.tokenizer, cfg, template=ctx.template, think=think)
            rejected.append(_side_rejects(chosen.rejected, "chosen" if not kto else "completion"))
            sides = {"chosen" if not kto else "completion": chosen.counts}
            ok = pc.is_in(pa.array(part["id"].to_list(), pa.string()), value_set=chosen.table.column("id"))
            if kto:
                tables[split] = _kto_table(chosen.table, part)
            else:
                # `output` too: a record holding a special token's text is re-rendered from it (dataforge.data.markers).
                as_rejected = part.with_columns(pl.col(R.REJECTED).alias("output"), pl.col(R.REJECTED_RESPONSE).alias(R.RESPONSE))
                other = tokenize_records(as_rejected, ctx.tokenizer, cfg, template=ctx.template, think=think)
                sides["rejected"] = other.counts
                both = pc.and_(ok, pc.is_in(pa.array(part["id"].to_list(), pa.string()), value_set=other.table.column("id")))
                only_rejected = other.rejected.filter(~pl.col("id").is_in(chosen.rejected["id"].implode()))
                rejected.append(_side_rejects(only_rejected, "rejected"))
                ok = both
                tables[split] = _pair_table(chosen.table, other.table, part.filter(pl.Series(ok.to_numpy(zero_copy_only=False))))
            kept.append(part.filter(pl.Series(ok.to_numpy(zero_copy_only=False))))
            stats["counts"][split] = {**_sum_counts(list(sides.values())), "by_side": sides}
            stats["lengths"][split] = length_stats(_lengths(tables[split], kto))
        return StageResult(kept=pl.concat(kept), rejected=pl.concat(rejected), stats=stats, tables=tables)

    def summary(self, result: StageResult) -> str:
        return ", ".join(f"{s} {t.num_rows:,}" for s, t in result.tables.items()) + " pairs"


def _sum_counts(sides: list[dict]) -> dict:
    """Sequence counts (truncated, dropped, ...) of both sides added up, overall and per source, in the
    shape SFT builds report, so the build summary reads them alike."""
    out: dict = {"by_source": {}}
    for counts in sides:
        for k, n in counts.items():
            if k == "by_source":
                for src, c in n.items():
                    row = out["by_source"].setdefault(src, {})
                    for kk, nn in c.items():
                        row[kk] = row.get(kk, 0) + nn
            else:
                out[k] = out.get(k, 0) + n
    return out


def _side_rejects(rejects: pl.DataFrame, side: str) -> pl.DataFrame:
    return rejects.with_columns(pl.concat_str(pl.lit(f"{side} side: "), pl.col("detail")).alias("detail"))


def _lengths(table: pa.Table, kto: bool) -> np.ndarray:
    from dataforge.data.tokenize import list_lengths

    if kto:
        return list_lengths(table.column("input_ids"))
    return list_lengths(table.column("chosen_input_ids")) + list_lengths(table.column("rejected_input_ids"))


def _select(table: pa.Table, ids: pa.Array) -> pa.Table:
    """`table`'s rows with these ids, in the order of `ids`."""
    index = pc.index_in(ids, value_set=table.column("id"))
    return table.take(index)


def _pair_table(chosen: pa.Table, rejected: pa.Table, pairs: pl.DataFrame) -> pa.Table:
    ids = pa.array(pairs["id"].to_list(), pa.string())
    c, r = _select(chosen, ids), _select(rejected, ids)
    return pa.table({
        "id": ids,
        "prompt_id": pa.array(pairs[R.PROMPT_ID].to_list(), pa.string()),
        "source": pa.array(pairs["source"].to_list(), pa.string()),
        "chosen_input_ids": c.column("input_ids"), "chosen_labels": c.column("labels"),
        "rejected_input_ids": r.column("input_ids"), "rejected_labels": r.column("labels"),
    }).select(list(PAIR_COLUMNS))


def _kto_table(table: pa.Table, rows: pl.DataFrame) -> pa.Table:
    kept = rows.filter(pl.col("id").is_in(table.column("id").to_pylist()))
    ids = pa.array(kept["id"].to_list(), pa.string())
    t = _select(table, ids)
    return pa.table({
        "id": ids,
        "prompt_id": pa.array(kept[R.PROMPT_ID].to_list(), pa.string()),
        "source": pa.array(kept["source"].to_list(), pa.string()),
        "input_ids": t.column("input_ids"), "labels": t.column("labels"),
        "kto_label": pa.array(kept[R.KTO_LABEL].to_list(), pa.bool_()),
    }).select(list(KTO_COLUMNS))


PREFERENCE_STAGES: list[Stage] = [
    PairCollect(), PairClean(), ExactDedupe(), PromptNearDedupe(), PromptReferenceDedupe(), PromptDecontaminate(),
    PromptSplit(), Mix(), PairTemplate(), PairTokenize(),
]

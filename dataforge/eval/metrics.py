"""Scoring generation outputs: per-sample metrics and taxonomy labels.

The metrics are the `evaluate` modules shipped in `evals/metrics/` and loaded by path, so they run
offline and give the same numbers as `evaluate.load` of the published module. Every metric is
computed per sample (ROUGE F-measures, exact match) or as per-sample sufficient statistics (BLEU,
chrF), because aggregates and their confidence intervals are computed later by resampling samples
(`dataforge.eval.aggregate`); nothing here averages.
"""

from __future__ import annotations

import functools
from enum import Enum

from pydantic import Field, model_validator

from dataforge.config.base import StrictModel
from dataforge.errors import InputError
from dataforge.eval.results import prompt_text, sample_hash
from dataforge.eval.taxonomy import FormatSpec, OutputFormat, TaxonomyConfig, judge_output
from dataforge.paths import evals_dir


class GenerationMetric(str, Enum):
    rouge = "rouge"              # rouge1, rouge2, rougeL, rougeLsum
    bleu = "bleu"
    chrf = "chrf"
    exact_match = "exact_match"


class RougeTokenizer(str, Enum):
    default = "default"
    unicode = "unicode"


METRIC_NAMES: dict[GenerationMetric, tuple[str, ...]] = {
    GenerationMetric.rouge: ("rouge1", "rouge2", "rougeL", "rougeLsum"),
    GenerationMetric.bleu: ("bleu",),
    GenerationMetric.chrf: ("chrf",),
    GenerationMetric.exact_match: ("exact_match",),
}


class ExactMatchConfig(StrictModel):
    ignore_case: bool = Field(True, description="Casefold both texts before comparing.")
    ignore_punctuation: bool = Field(False, description="Drop punctuation before comparing.")
    normalize_whitespace: bool = Field(True, description="Strip and collapse whitespace before comparing.")


class GenerationScoring(StrictModel):
    """How a generation task's outputs are scored: which metrics, the declared output format, and the
    taxonomy rules with their thresholds. Embedded as `generation:` in a generation task's YAML."""

    metrics: list[GenerationMetric] = Field(
        default_factory=lambda: list(GenerationMetric),
        description="Metric families: rouge (rouge1/2/L/Lsum), bleu, chrf (sacrebleu, corpus-level), exact_match.")
    rouge_tokenizer: RougeTokenizer = Field(
        RougeTokenizer.default,
        description="default: rouge-score's (a-z0-9 only, Porter stemming); unicode: any script, no stemming "
                    "(use it for non-Latin references, which the default reduces to nothing).")
    bleu_tokenize: str = Field("13a", description="sacrebleu tokenizer for BLEU (13a, intl, zh, ja-mecab, char, ...).")
    chrf_word_order: int = Field(0, ge=0, le=6, description="chrF word n-gram order; 2 gives chrF++.")
    exact_match: ExactMatchConfig = Field(default_factory=ExactMatchConfig, description="Exact-match normalization.")
    format: OutputFormat = Field(OutputFormat.free, description="Declared output format: free, json, label or number.")
    labels: list[str] = Field(default_factory=list, description="Allowed answers when format is 'label'.")
    case_sensitive_labels: bool = Field(False, description="Match labels case-sensitively.")
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig, description="Error-taxonomy rules and thresholds.")

    @model_validator(mode="after")
    def _labels_match_format(self):
        if self.format is OutputFormat.label and not self.labels:
            raise ValueError("format 'label' needs a non-empty 'labels' list")
        if self.labels and self.format is not OutputFormat.label:
            raise ValueError(f"'labels' is only used with format 'label' (format is '{self.format.value}')")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics lists a family twice")
        return self

    @property
    def format_spec(self) -> FormatSpec:
        return FormatSpec(format=self.format, labels=self.labels, case_sensitive_labels=self.case_sensitive_labels)

    def metric_names(self) -> list[str]:
        return [name for family in self.metrics for name in METRIC_NAMES[family]]


@functools.cache
def load_metric(name: str):
    """The shipped `evaluate` module `evals/metrics/<name>`, kept in memory (no cache files)."""
    import evaluate

    path = evals_dir() / "metrics" / name
    if not (path / f"{name}.py").is_file():
        raise InputError(f"metric module not found: {path}/{name}.py")
    return evaluate.load(str(path), keep_in_memory=True)


def metric_signatures(scoring: GenerationScoring) -> dict[str, str]:
    """What each metric's number means (library version, tokenizer, normalization), for the record."""
    from importlib import metadata

    sigs: dict[str, str] = {}
    if GenerationMetric.rouge in scoring.metrics:
        stem = "yes" if scoring.rouge_tokenizer is RougeTokenizer.default else "no"
        sig = (f"rouge-score:{metadata.version('rouge-score')}|tok:{scoring.rouge_tokenizer.value}|stem:{stem}"
               f"|lsum-split:newline|agg:mean")
        sigs.update(dict.fromkeys(METRIC_NAMES[GenerationMetric.rouge], sig))
    if GenerationMetric.bleu in scoring.metrics:
        sigs["bleu"] = load_metric("bleu").compute(predictions=["a"], references=["a"],
                                                   tokenize=scoring.bleu_tokenize)["signature"]
    if GenerationMetric.chrf in scoring.metrics:
        sigs["chrf"] = load_metric("chrf").compute(predictions=["a"], references=["a"],
                                                   word_order=scoring.chrf_word_order)["signature"]
    if GenerationMetric.exact_match in scoring.metrics:
        sigs["exact_match"] = load_metric("exact_match").compute(
            predictions=["a"], references=["a"], **scoring.exact_match.model_dump())["signature"]
    return sigs


def _text_field(row: dict, index: int, field: str) -> str:
    if field not in row:
        raise InputError("the sample has no field", line=index + 1, field=field)
    value = row[field]
    if field == "prediction" and value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {type(value).__name__}", line=index + 1, field=field)
    return value


def score_generation(rows: list[dict], scoring: GenerationScoring) -> list[dict]:
    """Each row (prompt, prediction, reference, optional finish_reason and sample_id) comes back as a
    new dict with "sample_id", per-sample "metrics", "metric_stats" (BLEU/chrF sufficient statistics)
    taxonomy "labels" and "abstained" ({label: reason} for rules that could not judge the sample,
    such as wrong_language on a short answer). A null prediction is scored as an empty output, never dropped."""
    preds = [_text_field(r, i, "prediction") for i, r in enumerate(rows)]
    refs = [_text_field(r, i, "reference") for i, r in enumerate(rows)]
    prompts = [prompt_text(r.get("prompt")) for r in rows]
    per_sample: dict[str, list[float]] = {}
    stats: dict[str, list[list[int]]] = {}
    if rows:
        per_sample, stats = _compute(preds, refs, scoring)
    rouge_l = per_sample.get("rougeL")
    if rouge_l is None and scoring.taxonomy.low_overlap.enabled and rows:
        rouge_l = load_metric("rouge").compute(predictions=preds, references=refs, rouge_types=["rougeL"],
                                               tokenizer=scoring.rouge_tokenizer.value, use_aggregator=False)["rougeL"]
    spec = scoring.format_spec
    out = []
    for i, row in enumerate(rows):
        finish = row.get("finish_reason")
        new = dict(row)
        new["sample_id"] = row.get("sample_id") or sample_hash(prompts[i])
        new["prediction"] = preds[i]
        new["metrics"] = {name: float(values[i]) for name, values in per_sample.items()}
        if stats:
            new["metric_stats"] = {name: values[i] for name, values in stats.items()}
        judged = judge_output(prompts[i], preds[i], refs[i], finish if isinstance(finish, str) else None,
                              None if rouge_l is None else float(rouge_l[i]), scoring.taxonomy, spec)
        new["labels"] = judged.labels
        new["abstained"] = judged.abstained
        out.append(new)
    return out


def _compute(preds: list[str], refs: list[str], scoring: GenerationScoring
             ) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    per_sample: dict[str, list[float]] = {}
    stats: dict[str, list[list[int]]] = {}
    if GenerationMetric.rouge in scoring.metrics:
        per_sample.update(load_metric("rouge").compute(
            predictions=preds, references=refs, tokenizer=scoring.rouge_tokenizer.value, use_aggregator=False))
    if GenerationMetric.bleu in scoring.metrics:
        res = load_metric("bleu").compute(predictions=preds, references=refs, tokenize=scoring.bleu_tokenize,
                                          per_sample=True)
        per_sample["bleu"], stats["bleu"] = res["sentence_scores"], res["stats"]
    if GenerationMetric.chrf in scoring.metrics:
        res = load_metric("chrf").compute(predictions=preds, references=refs, word_order=scoring.chrf_word_order,
                                          per_sample=True)
        per_sample["chrf"], stats["chrf"] = res["sentence_scores"], res["stats"]
    if GenerationMetric.exact_match in scoring.metrics:
        per_sample["exact_match"] = load_metric("exact_match").compute(
            predictions=preds, references=refs, per_sample=True, **scoring.exact_match.model_dump())["scores"]
    return per_sample, stats

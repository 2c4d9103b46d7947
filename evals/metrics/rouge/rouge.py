"""ROUGE-1/2/L/Lsum as an `evaluate` module, with a deterministic mean.

The hub `rouge` metric aggregates with rouge-score's BootstrapAggregator, which resamples without a
seed, so two runs on the same outputs can report different numbers. This module reports the plain
mean of the per-sample F-measures (or the per-sample scores themselves); confidence intervals come
from the caller's own seeded bootstrap.

rougeLsum splits summaries into sentences on newlines (no nltk data download needed).
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """ROUGE F-measures (rouge-score, Porter stemming on by default), averaged without resampling."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    rouge_types: subset of ["rouge1", "rouge2", "rougeL", "rougeLsum"] (default: all four).
    use_stemmer: Porter-stem English words before matching (default True).
    tokenizer: "default" (rouge-score: lowercase, only a-z and 0-9 survive) or "unicode"
        (lowercase, every word of any script, each CJK/kana/Thai character its own token, no stemming).
    use_aggregator: True returns the mean over samples, False the per-sample lists.
Returns:
    {rouge_type: float} or {rouge_type: list[float]}.
Examples:
    >>> rouge = evaluate.load("evals/metrics/rouge")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge1"]
    0.8571428571428571
"""

_CITATION = """@inproceedings{lin-2004-rouge, title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
author = "Lin, Chin-Yew", booktitle = "Text Summarization Branches Out", year = "2004", pages = "74--81"}"""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_NO_SPACE_SCRIPTS = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNICODE_TOKEN = re.compile(f"[{_NO_SPACE_SCRIPTS}]|[^\\W_{_NO_SPACE_SCRIPTS}]+")


class UnicodeTokenizer:
    """Words of any script; scripts written without spaces fall back to one token per character."""

    def tokenize(self, text):
        return _UNICODE_TOKEN.findall(text.lower())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://en.wikipedia.org/wiki/ROUGE_(metric)"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True, tokenizer="default",
                 use_aggregator=True):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        unknown = [t for t in rouge_types if t not in ROUGE_TYPES]
        if unknown:
            raise ValueError(f"unknown rouge types {unknown}; choose from {list(ROUGE_TYPES)}")
        if tokenizer not in ("default", "unicode"):
            raise ValueError(f"tokenizer must be 'default' or 'unicode', got {tokenizer!r}")
        scorer = rouge_scorer.RougeScorer(
            rouge_types,
            use_stemmer=use_stemmer and tokenizer == "default",
            tokenizer=UnicodeTokenizer() if tokenizer == "unicode" else None,
        )
        per_sample = {t: [] for t in rouge_types}
        for pred, ref in zip(predictions, references, strict=True):
            scores = scorer.score(ref, pred)
            for t in rouge_types:
                per_sample[t].append(scores[t].fmeasure)
        if not use_aggregator:
            return per_sample
        return {t: (sum(v) / len(v) if v else 0.0) for t, v in per_sample.items()}

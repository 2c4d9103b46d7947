"""Corpus BLEU (sacrebleu) as an `evaluate` module, with its signature and per-sample statistics.

Besides the corpus score it returns each sample's sufficient statistics (hypothesis and reference
lengths, matched and total n-grams), so a caller can re-aggregate any resample of the corpus into
exactly the corpus BLEU sacrebleu would give for it, and a sentence BLEU (effective order) per sample.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = """Corpus BLEU from sacrebleu (13a tokenizer, exp smoothing), with the sacrebleu signature."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    tokenize: sacrebleu tokenizer name (default "13a"; "zh", "ja-mecab", "char", "flores200", ...).
    lowercase: compare case-insensitively (default False).
    per_sample: also return "sentence_scores" and "stats" (one list of ints per sample).
Returns:
    {"score": float (0-100), "signature": str, "sentence_scores": [...], "stats": [[...], ...]}
Examples:
    >>> bleu = evaluate.load("evals/metrics/bleu")
    >>> round(bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["score"], 1)
    100.0
"""

_CITATION = """@inproceedings{post-2018-call, title = "A Call for Clarity in Reporting {BLEU} Scores",
author = "Post, Matt", booktitle = "Proceedings of the Third Conference on Machine Translation", year = "2018",
pages = "186--191"}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, per_sample=False):
        corpus = BLEU(tokenize=tokenize, lowercase=lowercase)
        stats = corpus._extract_corpus_statistics(predictions, [list(references)])
        totals = [sum(col) for col in zip(*stats, strict=True)] if stats else [0] * (2 + 2 * corpus.max_ngram_order)
        out = {"score": corpus._compute_score_from_stats(totals).score,
               "signature": str(corpus.get_signature())}
        if per_sample:
            sentence = BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)
            out["sentence_scores"] = [sentence._compute_score_from_stats(s).score for s in stats]
            out["stats"] = [[int(x) for x in s] for s in stats]
        return out

"""Corpus chrF (sacrebleu) as an `evaluate` module, with its signature and per-sample statistics.

As for BLEU, each sample's character n-gram statistics are returned so that a resample of the
corpus can be re-scored exactly as sacrebleu would score it.
"""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = """Corpus chrF from sacrebleu (character 6-grams, beta 2; word_order 2 gives chrF++)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    char_order: character n-gram order (default 6).
    word_order: word n-gram order (default 0; 2 gives chrF++).
    beta: recall weight (default 2).
    lowercase: compare case-insensitively (default False).
    per_sample: also return "sentence_scores" and "stats" (one list of ints per sample).
Returns:
    {"score": float (0-100), "signature": str, "sentence_scores": [...], "stats": [[...], ...]}
Examples:
    >>> chrf = evaluate.load("evals/metrics/chrf")
    >>> round(chrf.compute(predictions=["the cat"], references=["the cat"])["score"], 1)
    100.0
"""

_CITATION = """@inproceedings{popovic-2015-chrf, title = "chr{F}: character n-gram {F}-score for automatic {MT}
evaluation", author = "Popovi{\\'c}, Maja", booktitle = "Proceedings of the Tenth Workshop on Statistical Machine
Translation", year = "2015", pages = "392--395"}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
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

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, lowercase=False,
                 per_sample=False):
        chrf = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)
        stats = chrf._extract_corpus_statistics(predictions, [list(references)])
        width = 3 * (char_order + word_order)
        totals = [sum(col) for col in zip(*stats, strict=True)] if stats else [0] * width
        out = {"score": chrf._compute_score_from_stats(totals).score, "signature": str(chrf.get_signature())}
        if per_sample:
            out["sentence_scores"] = [chrf._compute_score_from_stats(s).score for s in stats]
            out["stats"] = [[int(x) for x in s] for s in stats]
        return out

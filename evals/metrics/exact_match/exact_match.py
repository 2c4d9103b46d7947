"""Exact match after a stated normalization, as an `evaluate` module.

The normalization is part of the result's meaning, so it is returned as a signature string that
the caller records beside the score.
"""

import re
import string
import unicodedata

import datasets
import evaluate

_DESCRIPTION = """1.0 when the prediction equals the reference after normalization, else 0.0."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    ignore_case: casefold both texts (default True).
    ignore_punctuation: drop Unicode punctuation (default False).
    normalize_whitespace: strip, and collapse runs of whitespace to one space (default True).
    per_sample: also return "scores", one 0.0/1.0 per sample.
Returns:
    {"exact_match": float, "signature": str, "scores": [...]}
Examples:
    >>> em = evaluate.load("evals/metrics/exact_match")
    >>> em.compute(predictions=["Paris "], references=["paris"])["exact_match"]
    1.0
"""

_CITATION = ""


def _drop_punctuation(text):
    return "".join(ch for ch in text if not (unicodedata.category(ch).startswith("P") or ch in string.punctuation))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ignore_case=True, ignore_punctuation=False,
                 normalize_whitespace=True, per_sample=False):
        def norm(text):
            text = unicodedata.normalize("NFC", text)
            if ignore_case:
                text = text.casefold()
            if ignore_punctuation:
                text = _drop_punctuation(text)
            if normalize_whitespace:
                text = re.sub(r"\s+", " ", text).strip()
            return text

        scores = [float(norm(p) == norm(r)) for p, r in zip(predictions, references, strict=True)]
        out = {
            "exact_match": sum(scores) / len(scores) if scores else 0.0,
            "signature": f"case:{'ignore' if ignore_case else 'keep'}|punct:{'ignore' if ignore_punctuation else 'keep'}"
                         f"|ws:{'collapse' if normalize_whitespace else 'keep'}|nfc",
        }
        if per_sample:
            out["scores"] = scores
        return out

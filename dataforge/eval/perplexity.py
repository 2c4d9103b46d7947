"""Perplexity of a text corpus, scored as lm-evaluation-harness's `loglikelihood_rolling` does.

Every document is scored whole, in disjoint windows of the model's max length (the first window
conditioned on the prefix token), never truncated. A row per document carries the sums the
aggregate needs: `ll`, `n_tokens`, `n_words` (len(re.split(r"\\s+", text)), lm-eval's count) and
`n_bytes` (UTF-8). `dataforge.eval.aggregate` computes the corpus metrics from the sums, not from
a mean of per-document perplexities:

    perplexity = exp(-sum ll / sum n_tokens)       word_perplexity = exp(-sum ll / sum n_words)
    byte_perplexity = exp(-sum ll / sum n_bytes)   bits_per_byte = -sum ll / (sum n_bytes * ln 2)

(HF evaluate's perplexity metric truncates long texts silently and averages per-text perplexities;
it answers a different question.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dataforge.errors import InputError
from dataforge.eval.lm import LanguageModel, Progress
from dataforge.eval.results import sample_hash
from dataforge.eval.tasks import Document, PerplexityTask, Task, read_records

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class CorpusDoc:
    text: str
    origin: str
    line: int


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def split_text(text: str, document: Document) -> list[tuple[str, int]]:
    """(document, 1-based first line) pairs; blank documents are dropped."""
    if document is Document.file:
        return [(text, 1)] if text.strip() else []
    if document is Document.line:
        return [(line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    out, line, pos = [], 1, 0
    for m in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        chunk = text[pos:end]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip("\n"))
            out.append((chunk.strip("\n"), line + lead))
        if m:
            line += text.count("\n", pos, m.end())
            pos = m.end()
    return out


def read_corpus(task: Task) -> list[CorpusDoc]:
    """The task's documents: a .txt file split by `document`, or `text_field` of each record."""
    spec: PerplexityTask = task.spec  # type: ignore[assignment]
    path = task.data_path
    if path is not None and path.is_file() and path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
        docs = [CorpusDoc(t, str(path), n) for t, n in split_text(text, spec.document)]
        origin = str(path)
    else:
        records = read_records(task)
        docs, origin = [], records.origin
        for i, row in enumerate(records.rows):
            where, line = records.where(i)
            text = row.get(spec.text_field)
            if not isinstance(text, str):
                raise InputError("missing field" if text is None else f"must be text, got {type(text).__name__}",
                                 file=where, line=line, field=spec.text_field)
            if text.strip():
                docs.append(CorpusDoc(text, where, line))
    if not docs:
        raise InputError(f"empty corpus: no non-blank text to score (task {task.name})", file=origin)
    return docs


def score_corpus(lm: LanguageModel, docs: Sequence[CorpusDoc], progress: Progress = None) -> list[dict]:
    """One row per document with the sums every corpus metric is computed from."""
    scores = lm.loglikelihood_rolling([d.text for d in docs], progress=progress)
    return corpus_rows(docs, [(s.ll, s.n_tokens) for s in scores])


def corpus_rows(docs: Sequence[CorpusDoc], scores: Sequence[tuple[float, int]]) -> list[dict]:
    """Results rows from (loglikelihood, predicted tokens) per document."""
    return [{"sample_id": sample_hash(d.text), "text": d.text, "origin": f"{d.origin}:{d.line}", "ll": ll,
             "n_tokens": n_tokens, "n_words": count_words(d.text), "n_bytes": count_bytes(d.text), "metrics": {}}
            for d, (ll, n_tokens) in zip(docs, scores, strict=True)]

"""The `perplexity` task type: rolling loglikelihood of a corpus, aggregated from sums."""

from __future__ import annotations

import math

import numpy as np

from dataforge.eval import perplexity
from dataforge.eval.aggregate import PERPLEXITY_FIELDS, PERPLEXITY_METRICS
from dataforge.eval.runner import cached_map, limit_items, request_key
from dataforge.eval.task_types import CorpusSums, TaskContext, TaskTypeEntry
from dataforge.eval.tasks import PerplexityTask, Task


def run_perplexity(task: Task, ctx: TaskContext) -> list[dict]:
    docs = limit_items(perplexity.read_corpus(task), ctx.limit)
    ctx.step.update(total=len(docs))
    keys = [request_key("rolling", d.text) for d in docs]

    def compute(idx: list[int]) -> list[list]:
        scores = ctx.lm.loglikelihood_rolling([docs[i].text for i in idx])
        ctx.step.advance(len(idx))
        return [[s.ll, s.n_tokens] for s in scores]

    return perplexity.corpus_rows(docs, cached_map(ctx.cache, keys, compute, ctx.step.advance))


def corpus_metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
    """perplexity, word_perplexity, byte_perplexity and bits_per_byte from summed ll, n_tokens,
    n_words and n_bytes (see dataforge.eval.perplexity)."""
    ll, n_tok, n_words, n_bytes = sums.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return {"perplexity": np.exp(-ll / n_tok), "word_perplexity": np.exp(-ll / n_words),
                "byte_perplexity": np.exp(-ll / n_bytes), "bits_per_byte": -ll / (n_bytes * math.log(2))}


ENTRY = TaskTypeEntry(name="perplexity", spec=PerplexityTask, run=run_perplexity,
                      primary_metrics=("bits_per_byte", "perplexity"),
                      sums=CorpusSums(PERPLEXITY_FIELDS, PERPLEXITY_METRICS, corpus_metrics),
                      figure_metric="perplexity")

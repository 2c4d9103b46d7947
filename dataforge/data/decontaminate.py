"""Drop training records that share a long word n-gram with an eval set (test-set contamination).

The check follows GPT-3 (Brown et al. 2020, appendix C) and Llama 2: any shared span of `ngram`
(default 13) consecutive words marks the training record as contaminated. Words are the tokens of
dataforge.data.ngrams: lowercased runs of letters and digits, punctuation and whitespace dropped
(Han and kana one per character), so "The Eiffel Tower, in Paris" and "the eiffel tower in paris"
match. Each field (system, instruction, input, output, each history turn) is scanned on its own, so
a span never runs from one field into the next; eval texts are taken as given (one text each).

Short eval texts: a text with fewer than `ngram` words has no n-gram of that length, so it is
matched whole: a training field containing all its words, in order, is contaminated. Texts under
`min_whole_tokens` (8) words are skipped: labels, options and one-word answers ("yes", "B",
"Paris") occur in unrelated text and would flag it.

Matching hashes every n-gram (xxh3_64 per word, combined in numpy) and looks it up in the sorted
array of eval n-gram hashes; every hit is then confirmed by comparing the words themselves, so a
hash collision can never drop a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dataforge.config.suite import Task, load_suite, matches_where, resolve_suite, split_file
from dataforge.data.ngrams import token_hashes, tokenize, window_hashes
from dataforge.data.stage import StageResult, make_rejects
from dataforge.errors import ConfigError, InputError

STAGE = "decontaminate"
MIN_WHOLE_TOKENS = 8
_FIELDS = ("instruction", "input", "output", "system")
_SEGMENT_CHUNK = 200_000


@dataclass
class _EvalIndex:
    """Every eval n-gram (and whole short text), sorted by hash, with where it came from."""

    hashes: np.ndarray
    seen: np.ndarray  # bool table over the low bits of `hashes`: a cheap first test before the binary search
    set_no: np.ndarray
    text_no: np.ndarray
    pos: np.ndarray
    widths: list[int]
    names: list[str]
    tokens: list[pl.Series]

    @classmethod
    def build(cls, eval_sets: dict[str, list[str]], ngram: int, min_whole: int) -> _EvalIndex:
        parts, names, tokens = [], [], []
        for set_no, (name, texts) in enumerate(eval_sets.items()):
            toks = tokenize(pl.Series(texts, dtype=pl.Utf8))
            hashes, counts = token_hashes(toks)
            h, owner, pos = window_hashes(hashes, counts, ngram)
            width = np.minimum(counts[owner], ngram)
            keep = width >= min_whole
            parts.append((h[keep], np.full(int(keep.sum()), set_no), owner[keep], pos[keep], width[keep]))
            names.append(name)
            tokens.append(toks)
        h, set_no, text_no, pos, width = (np.concatenate(p) for p in zip(*parts, strict=True)) if parts else \
            (np.zeros(0, np.uint64), *(np.zeros(0, np.int64) for _ in range(4)))
        order = np.lexsort((pos, text_no, set_no, h))
        bits = int(np.clip(np.ceil(np.log2(max(len(h), 1) * 32)), 16, 26))
        seen = np.zeros(1 << bits, dtype=bool)
        seen[h & np.uint64((1 << bits) - 1)] = True
        return cls(h[order], seen, set_no[order], text_no[order], pos[order], sorted({int(w) for w in width}),
                   names, tokens)

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of `h` are eval hashes, index of the first matching eval entry for those)."""
        maybe = np.flatnonzero(self.seen[h & np.uint64(len(self.seen) - 1)])
        at = np.searchsorted(self.hashes, h[maybe])
        inside = at < len(self.hashes)
        found = np.zeros(len(maybe), dtype=bool)
        found[inside] = self.hashes[at[inside]] == h[maybe][inside]
        hit = np.zeros(len(h), dtype=bool)
        hit[maybe[found]] = True
        return hit, at[found]


def _segments(records: pl.DataFrame) -> pl.DataFrame:
    """One row per non-empty text field: row (record position), field, text."""
    row = pl.int_range(pl.len(), dtype=pl.Int64).alias("row")
    frames = [records.select(row, pl.lit(c).alias("field"), pl.col(c).alias("text")) for c in _FIELDS if c in records.columns]
    if "history" in records.columns:
        turns = records.select(row, pl.col("history")).explode("history")
        frames.append(turns.select("row", pl.lit("history").alias("field"),
                                   pl.col("history").struct.field("content").alias("text")))
    segs = pl.concat(frames) if frames else pl.DataFrame(schema={"row": pl.Int64, "field": pl.Utf8, "text": pl.Utf8})
    return segs.filter(pl.col("text").is_not_null() & (pl.col("text") != ""))


def decontaminate(records: pl.DataFrame, eval_sets: dict[str, list[str]], ngram: int = 13, *,
                  min_whole_tokens: int = MIN_WHOLE_TOKENS) -> StageResult:
    """Reject every record that shares an `ngram`-word span (or a whole short text) with an eval text."""
    index = _EvalIndex.build(eval_sets, ngram, min(min_whole_tokens, ngram))
    found: dict[int, tuple[int, int, str, str]] = {}  # record row -> (set_no, text_no, span, field)
    if len(index.hashes) and records.height:
        segs = _segments(records)
        for lo in range(0, segs.height, _SEGMENT_CHUNK):
            chunk = segs.slice(lo, _SEGMENT_CHUNK)
            _scan(chunk, index, found)
    rows = np.array(sorted(found), dtype=np.int64)
    hits = [found[r] for r in rows.tolist()]
    removed = records[rows].with_columns(
        pl.Series("_set", [index.names[h[0]] for h in hits], dtype=pl.Utf8),
        pl.Series("_text", [h[1] for h in hits], dtype=pl.Int64),
        pl.Series("_span", [h[2] for h in hits], dtype=pl.Utf8),
        pl.Series("_field", [h[3] for h in hits], dtype=pl.Utf8),
    )
    rejected = make_rejects(removed, STAGE, "contaminated", pl.format(
        "{} shares the span '{}' with eval set '{}' (text #{})",
        pl.col("_field"), pl.col("_span"), pl.col("_set"), pl.col("_text")))
    contamination = removed.select(
        "id", "source", pl.format("{}:{}", pl.col("origin_file"), pl.col("origin_line")).alias("origin"),
        pl.col("_set").alias("eval_set"), pl.col("_text").alias("eval_index"), pl.col("_span").alias("span"),
    ).to_dicts()
    keep = np.ones(records.height, dtype=bool)
    keep[rows] = False
    by_set = removed.group_by("_set").len()
    return StageResult(kept=records.filter(pl.Series(keep)), rejected=rejected, extra={"contamination": contamination},
                       stats={"removed": len(rows), "ngram": ngram, "eval_texts": {n: len(t) for n, t in eval_sets.items()},
                              "removed_by_set": dict(sorted(by_set.iter_rows()))})


def _scan(chunk: pl.DataFrame, index: _EvalIndex, found: dict[int, tuple[int, int, str, str]]) -> None:
    """Find the first confirmed hit of each not-yet-contaminated record in this chunk of fields."""
    tokens = tokenize(chunk.get_column("text"))
    hashes, counts = token_hashes(tokens)
    candidates = []  # (segment, pos, width, eval entry)
    for width in index.widths:
        h, owner, pos = window_hashes(hashes, counts, width)
        full = counts[owner] >= width
        hit, entry = index.lookup(h[full])
        seg, at = owner[full][hit], pos[full][hit]
        candidates.append(np.stack([seg, at, np.full(len(seg), width), entry], axis=1))
    cand = np.concatenate(candidates) if candidates else np.zeros((0, 4), np.int64)
    if not len(cand):
        return
    cand = cand[np.lexsort((cand[:, 1], cand[:, 0]))]
    row_of = chunk.get_column("row").to_numpy()
    field_of = chunk.get_column("field")
    seg_tokens = dict(zip(np.unique(cand[:, 0]).tolist(),
                          tokens.gather(np.unique(cand[:, 0])).to_list(), strict=True))
    eval_tokens: dict[tuple[int, int], list[str]] = {}
    for seg, at, width, entry in cand.tolist():
        row = int(row_of[seg])
        if row in found:
            continue
        span = seg_tokens[seg][at:at + width]
        set_no, text_no, epos = int(index.set_no[entry]), int(index.text_no[entry]), int(index.pos[entry])
        if (set_no, text_no) not in eval_tokens:
            eval_tokens[set_no, text_no] = index.tokens[set_no][text_no].to_list()
        if eval_tokens[set_no, text_no][epos:epos + width] == span:
            found[row] = (set_no, text_no, " ".join(span), field_of[seg])


def suite_eval_texts(suite: str) -> dict[str, list[str]]:
    """Every string of every record each task of an eval suite scores, by task name.

    `suite` is a path to a suite YAML or a suite name in evals/. The suite is read with the schema
    eval uses (dataforge.config.suite), so a task's records here are the ones eval scores: the
    file of its scored split (`data.split`), filtered by `data.where`. Every string value of every
    record, including strings inside lists and nested mappings (choices, references), is one eval
    text; a `.txt` file (a perplexity corpus) is one text. Tasks whose data path names a run's own
    output (a suite variable such as `${build}`) are skipped: they are not fixed eval sets.
    """
    from dataforge.data.io.readers import read_records

    out: dict[str, list[str]] = {}
    for task, file in _suite_data(suite):
        if file.suffix == ".txt":
            out[task.name] = [file.read_text(encoding="utf-8")]
            continue
        where = task.spec.data.where
        out[task.name] = [s for record in read_records(file) if matches_where(record, where) for s in strings_in(record)]
    return out


def suite_files(suite: str) -> list[Path]:
    """Every file `suite_eval_texts(suite)` reads: the suite, its task YAMLs and their data files."""
    path = resolve_suite(suite, "decontaminate.suite")
    tasks = load_suite(path).tasks
    return [path, *(t.yaml_path for t in tasks), *(file for _, file in _suite_data(suite))]


def _suite_data(suite: str) -> list[tuple[Task, Path]]:
    """(task, the local file of its scored split) for every task that is a fixed eval set."""
    out = []
    for task in load_suite(resolve_suite(suite, "decontaminate.suite")).tasks:
        if task.run_vars:
            continue
        data = task.spec.data
        file = split_file(task, data.split)
        if file is None and task.data_path is None:
            raise ConfigError("data.path: required to decontaminate against this task (hub-only data is not read)",
                              str(task.yaml_path))
        if file is None:
            what = "does not exist" if not task.data_path.exists() else \
                f"holds no {data.split}.jsonl, {data.split}.json, {data.split}.parquet or {data.split}.txt"
            raise InputError(f"task {task.name}: data {what}", file=str(task.data_path), field="data.path")
        out.append((task, file))
    return out


def strings_in(value: object) -> list[str]:
    """Every string inside a record's (nested) fields: what an eval item is matched on."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings_in(v)]
    return []

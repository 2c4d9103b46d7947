"""Contamination-aware scores: each task's metric on the items a build's data overlaps, and on the rest.

An eval item "overlaps" a build when it shares a long word n-gram with it, by the same rule and
code as the build's decontaminate stage (`dataforge.data.decontaminate`: 13 words by default, short
texts matched whole, every hash hit confirmed on the words). Two sources:

* `contamination.jsonl` of the build (`mode="file"`): the spans its decontaminate stage found. The
  records holding them were removed from the build, so this shows which eval items the *raw* sources
  contained, e.g. to check what the tune could have seen had the stage been off, or to audit a
  build made without it.
* the build's split itself (`mode="ngram"`, the train split by default): an n-gram check at eval
  time against what the model was actually trained on.

An item's texts are the strings of its source record, each field apart, as the stage reads an eval
set (the rendered prompt when the data file changed since the run). For each
task and run, the metric is reported on clean and overlapping items apart, and the difference
overlapping - clean gets a bootstrap interval (the two groups resampled independently: they are
different items). A task is flagged when that interval excludes 0: its overall score is then not
a fair measure of the clean items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from dataforge.data.decontaminate import strings_in
from dataforge.errors import InputError
from dataforge.eval.aggregate import TaskArrays, interval, replicates, task_seed
from dataforge.eval.results import Results

Mode = Literal["file", "ngram"]
_ROW_KEYS = ("prompt", "query", "context", "text", "choices", "reference")


@dataclass
class TaskContamination:
    task: str
    metric: str
    n_clean: int
    n_overlap: int
    clean: float | None             # the metric on clean items (None when there is none)
    clean_ci: tuple[float, float]
    overlap: float | None
    overlap_ci: tuple[float, float]
    diff: float | None              # overlap - clean
    diff_ci: tuple[float, float]

    @property
    def flagged(self) -> bool:
        """The clean and overlapping scores differ beyond the bootstrap interval of their difference."""
        lo, hi = self.diff_ci
        return bool(np.isfinite(lo) and (lo > 0 or hi < 0))

    def to_dict(self) -> dict:
        return {"metric": self.metric, "n_clean": self.n_clean, "n_overlap": self.n_overlap,
                "clean": self.clean, "clean_ci": list(self.clean_ci), "overlap": self.overlap,
                "overlap_ci": list(self.overlap_ci), "difference": self.diff, "difference_ci": list(self.diff_ci),
                "flagged": self.flagged}


def build_texts(build_dir: Path, mode: Mode, split: str = "train") -> list[str]:
    """The build-side texts: the spans of contamination.jsonl, or every field of one split's records."""
    if not (build_dir / "manifest.json").is_file():
        raise InputError("is not a build folder (no manifest.json)", file=str(build_dir))
    if mode == "file":
        path = build_dir / "contamination.jsonl"
        if not path.is_file():
            raise InputError("not found: the build ran no decontaminate stage (use the n-gram check against its "
                             "train split instead)", file=str(path))
        spans = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=i) from None
            if not isinstance(row, dict) or not isinstance(row.get("span"), str):
                raise InputError("must be an object with the shared text in 'span'", file=str(path), line=i,
                                 field="span")
            spans.append(row["span"])
        return spans
    path = build_dir / "splits" / f"{split}.parquet"
    if not path.is_file():
        raise InputError(f"not found: the build has no {split!r} split", file=str(path))
    frame = pl.read_parquet(path)
    cols = [c for c in ("system", "instruction", "input", "output", "history") if c in frame.columns]
    return [s for row in frame.select(cols).iter_rows() for s in strings_in(list(row)) if s]


def _source_records(results: Results, task: str) -> dict[str, dict[int, dict]]:
    """{file: {line: record}} of the task's data, when the file is still what the run scored (its
    sha256 matches the results manifest); empty otherwise."""
    from dataforge.eval.tasks import read_table
    from dataforge.util.fingerprint import sha256_tree

    recorded = (results.manifest.get("data") or {}).get(task) or {}
    root = Path(recorded.get("path") or "")
    if not recorded.get("sha256") or not root.exists() or sha256_tree(root) != recorded["sha256"]:
        return {}
    out: dict[str, dict[int, dict]] = {}
    for file in [root] if root.is_file() else sorted(root.iterdir()):
        if file.suffix in (".jsonl", ".json", ".parquet"):
            table = read_table(file)
            out[str(file)] = dict(zip(table.lines, table.rows, strict=True))
    return out


def item_texts(results: Results, task: str) -> list[tuple[str, list[str]]]:
    """(sample id, texts) of every item of a task. The texts are every string of the item's source
    record (question, choices, answer: each field apart, as the decontaminate stage reads an eval
    set) when the data file is unchanged; else the strings the item was scored on (rendered prompt
    or query, choices, reference)."""
    sources = _source_records(results, task)
    out = []
    for row in results.rows(task):
        file, _, line = str(row.get("origin", "")).rpartition(":")
        record = sources.get(file, {}).get(int(line)) if line.isdigit() else None
        texts = strings_in(record) if record is not None else [s for k in _ROW_KEYS for s in strings_in(row.get(k))]
        out.append((row["sample_id"], [t for t in texts if t.strip()]))
    return out


def _frame(texts: list[str], source: str) -> pl.DataFrame:
    """Texts as the records the decontaminate stage scans (one field each)."""
    return pl.DataFrame({"id": [str(i) for i in range(len(texts))], "source": source, "origin_file": source,
                         "origin_line": list(range(len(texts))), "instruction": texts})


def _items_holding(spans: list[str], item_text: list[str], ngram: int) -> set[int]:
    """Item texts that contain one of `spans` (13-word spans, or whole short eval texts)."""
    from dataforge.data.decontaminate import decontaminate

    found = decontaminate(_frame(item_text, "eval"), {"spans": spans}, ngram).extra["contamination"]
    return {int(h["id"]) for h in found}


def _items_inside(records: list[str], item_text: list[str], ngram: int) -> set[int]:
    """Item texts that share an n-gram with a record, or lie whole inside one when shorter: the
    decontaminate stage's test, run with the items as the eval set. The stage reports one item per
    record, so the records that hit are scanned again for the items not found yet, until none is new."""
    from dataforge.data.decontaminate import decontaminate

    remaining, found = list(range(len(item_text))), set()
    while remaining and records:
        hits = decontaminate(_frame(records, "build"), {"items": [item_text[i] for i in remaining]},
                             ngram).extra["contamination"]
        new = {remaining[int(h["eval_index"])] for h in hits}
        if not new:
            break
        found |= new
        records = [records[int(h["id"])] for h in hits]
        remaining = [i for i in remaining if i not in new]
    return found


def overlapping_samples(results: Results, texts: list[str], ngram: int = 13, mode: Mode = "file") -> dict[str, set[str]]:
    """{task: sample ids of the items that overlap the build}. `mode="file"`: `texts` are the spans
    of contamination.jsonl, and an item overlaps when one of its texts contains a span. `mode="ngram"`:
    `texts` are a split's fields, and an item overlaps when it shares an n-gram with one (or, shorter
    than n words, lies whole inside one)."""
    owner, item_text = [], []          # per item text: (task, sample id), the text
    for task in results.task_names:
        for sid, strings in item_texts(results, task):
            for text in strings:
                owner.append((task, sid))
                item_text.append(text)
    out: dict[str, set[str]] = {t: set() for t in results.task_names}
    if not item_text or not texts:
        return out
    hits = _items_holding(texts, item_text, ngram) if mode == "file" else _items_inside(texts, item_text, ngram)
    for k in hits:
        task, sid = owner[k]
        out[task].add(sid)
    return out


def _group(task_type: str, rows: list[dict], metric: str, seed: int, n_boot: int, confidence: float):
    if not rows:
        return None, (float("nan"), float("nan")), None
    arrays = TaskArrays(task_type, rows)
    reps = replicates(arrays, seed, n_boot)[metric]
    _, lo, hi = interval(reps, confidence)
    return arrays.point()[metric], (lo, hi), reps


def contamination_scores(results: Results, overlapping: dict[str, set[str]], seed: int = 1234,
                         n_boot: int = 1000, confidence: float = 0.95) -> list[TaskContamination]:
    """Each task's primary metric on clean and overlapping items, and their difference with its CI."""
    out = []
    for task in results.task_names:
        entry = results.task(task)
        metric = entry["primary_metric"]
        rows = results.rows(task)
        hit = overlapping.get(task, set())
        clean_rows = [r for r in rows if r["sample_id"] not in hit]
        over_rows = [r for r in rows if r["sample_id"] in hit]
        base_seed = task_seed(seed, task)
        clean, clean_ci, clean_reps = _group(entry["type"], clean_rows, metric, base_seed, n_boot, confidence)
        over, over_ci, over_reps = _group(entry["type"], over_rows, metric, base_seed + 1, n_boot, confidence)
        diff, diff_ci = None, (float("nan"), float("nan"))
        if clean is not None and over is not None:
            diff = over - clean
            _, lo, hi = interval(over_reps - clean_reps, confidence)
            diff_ci = (lo, hi)
        out.append(TaskContamination(task, metric, len(clean_rows), len(over_rows), clean, clean_ci, over, over_ci,
                                     diff, diff_ci))
    return out

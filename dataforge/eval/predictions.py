"""Scoring a file of model outputs, with no model: a first-class input, not a test helper.

Outputs from a vLLM server, an API model or another tool get the same metrics, taxonomy, compare,
report and history as a `dataforge eval` run. The file is jsonl, json (a list of objects), csv or
parquet with a prompt, a prediction (`prediction` or `response`) and a reference (`reference` or
`target`); other column names are mapped as in a build input (`{canonical: yours}`), and a mapped
name may be a path into nested fields (`reference=instances[0].output`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.eval.metrics import GenerationScoring, metric_signatures, score_generation
from dataforge.eval.results import TAGS, TaskResult, write_results
from dataforge.util.fieldpath import MISSING, get_field, root_field
from dataforge.util.fingerprint import fingerprint, sha256_file
from dataforge.util.jsonl import iter_objects, read_object_list

CANONICAL = ("prompt", "prediction", "reference", "finish_reason", "sample_id")
REQUIRED = ("prompt", "prediction", "reference")
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "prediction": ("prediction", "response"),
    "reference": ("reference", "target"),
    "finish_reason": ("finish_reason",),
    "sample_id": ("sample_id",),
}
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or row number, object) pairs; line numbers are 1-based file lines for jsonl and csv."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from iter_objects(path)
    elif suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            start = 2
            for row in reader:
                if None in row:
                    raise InputError("the row has more cells than the header", file=str(path), line=start)
                yield start, row
                start = reader.line_num + 1
    elif suffix == ".json":
        yield from enumerate(read_object_list(path, "predictions"))
    elif suffix == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise InputError(f"cannot read parquet: {exc}", file=str(path)) from None
        yield from enumerate(frame.to_dicts())
    else:
        raise InputError(f"unsupported predictions file type '{path.suffix}' (use {', '.join(SUFFIXES)})",
                         file=str(path))


def resolve_columns(fields: list[str], columns: dict[str, str] | None, path: Path) -> dict[str, str]:
    """canonical -> column in the file: the mapping first, then the known aliases; an ambiguous or
    missing required column is an error that says how to map it."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(CANONICAL))
    if unknown:
        raise InputError(f"unknown canonical name(s) {unknown} in the column mapping; use {list(CANONICAL)}",
                         file=str(path))
    out: dict[str, str] = {}
    for canon in CANONICAL:
        if canon in columns:
            try:
                known = columns[canon] in fields or root_field(columns[canon]) in fields
            except ValueError as exc:
                raise InputError(f"--column {canon}: {exc}", file=str(path)) from None
            if not known:
                raise InputError(f"mapped column '{columns[canon]}' (for {canon}) is not in the file; "
                                 f"columns: {fields}", file=str(path))
            out[canon] = columns[canon]
            continue
        present = [a for a in ALIASES[canon] if a in fields and a not in columns.values()]
        if len(present) > 1:
            raise InputError(f"both {present} could be the {canon}; map one with --column {canon}=<name>",
                             file=str(path))
        if present:
            out[canon] = present[0]
        elif canon in REQUIRED:
            raise InputError(f"no {canon} column (looked for {list(ALIASES[canon])}); columns: {fields}; "
                             f"map one with --column {canon}=<name>", file=str(path))
    return out


def _text(value: Any, path: Path, line: int, column: str, *, nullable: bool = False, chat: bool = False) -> Any:
    if value is None:
        if nullable:
            return None
        raise InputError("is empty (null)", file=str(path), line=line, field=column)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if chat and isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return value
    raise InputError(f"must be text, got {type(value).__name__}", file=str(path), line=line, field=column)


def read_predictions(path: str | Path, columns: dict[str, str] | None = None) -> list[dict]:
    """Rows with the canonical fields, each remembering its origin line; nothing is dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError("predictions file does not exist", file=str(path))
    rows: list[dict] = []
    mapping: dict[str, str] | None = None
    for line, raw in _iter_rows(path):
        if mapping is None:
            mapping = resolve_columns(list(raw), columns, path)
        values = {canon: get_field(raw, col, MISSING) for canon, col in mapping.items()}
        missing = [mapping[canon] for canon in REQUIRED if values[canon] is MISSING]
        if missing:
            raise InputError("the record has no such field", file=str(path), line=line, field=missing[0])
        row = {
            "prompt": _text(values["prompt"], path, line, mapping["prompt"], chat=True),
            # A missing answer is an empty output: it is scored (and labelled `empty`), never dropped.
            "prediction": _text(values["prediction"], path, line, mapping["prediction"], nullable=True) or "",
            "reference": _text(values["reference"], path, line, mapping["reference"]),
            "origin_line": line,
        }
        for canon in ("finish_reason", "sample_id"):
            if canon in mapping and values[canon] not in (MISSING, None, ""):
                row[canon] = _text(values[canon], path, line, mapping[canon])
        rows.append(row)
    if not rows:
        raise InputError("the predictions file has no records", file=str(path))
    return rows


def predictions_suite(task_name: str, tag: str, scoring: GenerationScoring, suite: str | None = None) -> dict:
    """The suite of a predictions run: two files scored with the same task name and scoring config
    compare with each other, as two model runs of the same suite do."""
    name = suite or "predictions"
    return {"name": name, "fingerprint": fingerprint(name, task_name, tag, scoring.model_dump(mode="json")),
            "tasks": {task_name: tag}}


def score_predictions(path: str | Path, columns: dict[str, str] | None, scoring: GenerationScoring,
                      task_name: str = "predictions", tag: str = "domain", *, out: str | Path | None = None,
                      seed: int = 1234, n_boot: int = 1000, label: str | None = None,
                      suite: str | None = None) -> Path:
    """Score a predictions file and write a results folder (default: `runs/<file stem>.eval/` under the
    current directory, where every other command writes, never beside an input that may be read-only
    or shared)."""
    path = Path(path)
    if tag not in TAGS:
        raise InputError(f"tag must be one of {TAGS}, got {tag!r}")
    return score_rows(read_predictions(path, columns), path, scoring, task_name, tag, out=out, seed=seed,
                      n_boot=n_boot, label=label, suite=suite, source={"columns": columns or {}})


def score_rows(rows: list[dict], path: Path, scoring: GenerationScoring, task_name: str, tag: str, *,
               out: str | Path | None, seed: int, n_boot: int, label: str | None, suite: str | None,
               source: dict) -> Path:
    """Score rows read from `path` (any reader's canonical rows) into a results folder; `source`
    records how they were read."""
    if tag not in TAGS:
        raise InputError(f"tag must be one of {TAGS}, got {tag!r}")
    scored = score_generation(rows, scoring)
    out = Path(out) if out is not None else Path("runs") / f"{path.stem}.eval"
    digest = sha256_file(path)
    manifest = {
        "model": f"predictions:{path.name}",
        "adapter": None,
        "label": label or path.stem,
        "model_fingerprint": digest,
        "predictions": {"file": str(path.resolve()), "sha256": digest, **source},
        "suite": predictions_suite(task_name, tag, scoring, suite),
    }
    task = TaskResult(type="generation", tag=tag, rows=scored, config=scoring.model_dump(mode="json"),
                      signatures=metric_signatures(scoring))
    return write_results(out, manifest, {task_name: task}, seed=seed, n_boot=n_boot)

"""The eval results folder: the one format every eval, predictions run, compare and report share.

```
<res>/manifest.json        kind "eval", model, adapter, fingerprints, suite {name, fingerprint, gate}, seed, versions
<res>/metrics.json         {task: {type, tag, n, primary_metric, samples, metrics: {name: {value, stderr, ci_low,
                            ci_high, higher_is_better}}, labels and abstained (generation: rules that
                            could not judge, per label), signatures, config}}
<res>/samples/<task>.jsonl one row per sample, with "sample_id" and per-sample "metrics"
```
Task numbers are recomputed from the samples with `dataforge.eval.aggregate`, so metrics.json can
always be checked against the rows it came from. The folder is written whole or not at all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import xxhash

from dataforge.errors import InputError, StateError
from dataforge.eval.aggregate import aggregate, bootstrap_ci, higher_is_better, task_seed
from dataforge.eval.taxonomy import count_abstentions, summarize_labels
from dataforge.util.atomic import atomic_path
from dataforge.util.fingerprint import fingerprint, library_versions
from dataforge.util.jsonl import iter_objects

FORMAT_VERSION = 1
TAGS = ("domain", "general")


def sample_hash(text: str) -> str:
    """The sample id: xxh3_64 of the prompt or context text, so two runs pair on the same inputs."""
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8"))


def prompt_text(prompt: Any) -> str:
    """A prompt as one string: chat prompts (lists of messages) are joined by their contents."""
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    return "" if prompt is None else str(prompt)


@dataclass
class TaskResult:
    """One task's scored rows and what is needed to interpret them."""

    type: str                                   # a registered task type (dataforge.eval.task_types)
    tag: str                                    # domain | general
    rows: list[dict]
    config: dict | None = None                  # the task's config as run (recorded verbatim)
    signatures: dict[str, str] | None = None    # metric -> what its number means (metrics.metric_signatures)
    primary_metric: str | None = None           # the metric compare/forgetting/gate use; default by type


def default_primary_metric(task_type: str, names: list[str]) -> str:
    from dataforge.eval.task_types import get_task_type

    for name in get_task_type(task_type).primary_metrics:
        if name in names:
            return name
    if not names:
        raise ValueError(f"a {task_type} task has no metrics to choose a primary one from")
    return names[0]


def _with_sample_ids(task: str, rows: list[dict]) -> list[dict]:
    """Fill missing ids from the prompt/context text; repeats of the same text get '#2', '#3', ..."""
    seen: dict[str, int] = {}
    out = []
    for i, row in enumerate(rows):
        sid = row.get("sample_id")
        if not sid:
            text_key = next((k for k in ("prompt", "context", "text") if k in row), None)
            if text_key is None:
                raise ValueError(f"task {task!r}, row {i}: no sample_id and no prompt/context/text to derive it from")
            sid = sample_hash(prompt_text(row[text_key]))
        seen[sid] = seen.get(sid, 0) + 1
        if seen[sid] > 1:
            sid = f"{sid}#{seen[sid]}"
        out.append({**row, "sample_id": sid})
    return out


def _task_file(task: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("._") or "task"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return f"samples/{name}.jsonl"


def task_metrics(task_type: str, rows: list[dict], seed: int, n_boot: int) -> dict[str, dict[str, Any]]:
    values = aggregate(task_type, rows)
    cis = bootstrap_ci(task_type, rows, seed, n_boot)
    return {m: {"value": v, "stderr": cis[m][0], "ci_low": cis[m][1], "ci_high": cis[m][2],
                "higher_is_better": higher_is_better(m)} for m, v in values.items()}


def _check_manifest(manifest: dict) -> None:
    problems = []
    if not isinstance(manifest.get("model"), str):
        problems.append("'model' (the model name, path or predictions label) is required")
    suite = manifest.get("suite")
    if not (isinstance(suite, dict) and isinstance(suite.get("name"), str) and isinstance(suite.get("fingerprint"), str)):
        problems.append("'suite' must be {'name': str, 'fingerprint': str, ...}")
    if problems:
        raise ValueError("results manifest: " + "; ".join(problems))


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        manifest = out / "manifest.json"
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind") if manifest.is_file() else None
        except (OSError, ValueError):
            kind = None
        if kind != "eval":
            raise StateError(f"{out} exists and is not an eval results folder; refusing to replace it")


def write_results(out_dir: str | Path, manifest: dict, tasks: dict[str, TaskResult], seed: int,
                  n_boot: int = 1000) -> Path:
    """Write a results folder atomically (an existing results folder at `out_dir` is replaced whole).
    The manifest needs 'model' and 'suite' {name, fingerprint}; kind, seed, versions, created_at and
    run_id are added here."""
    from dataforge.eval.task_types import get_task_type, task_type_names

    _check_manifest(manifest)
    out = Path(out_dir)
    _check_out_dir(out)
    metrics: dict[str, dict] = {}
    files: dict[str, tuple[str, list[dict]]] = {}
    used: set[str] = set()
    for name, task in tasks.items():
        names = task_type_names()
        if task.type not in names:
            raise ValueError(f"task {name!r}: type must be one of {tuple(names)}, got {task.type!r}")
        if task.tag not in TAGS:
            raise ValueError(f"task {name!r}: tag must be one of {TAGS}, got {task.tag!r}")
        rows = _with_sample_ids(name, task.rows)
        values = task_metrics(task.type, rows, task_seed(seed, name), n_boot)
        entry: dict[str, Any] = {
            "type": task.type, "tag": task.tag, "n": len(rows),
            "primary_metric": task.primary_metric or default_primary_metric(task.type, list(values)),
            "samples": _task_file(name, used), "metrics": values,
        }
        if entry["primary_metric"] not in values:
            raise ValueError(f"task {name!r}: primary metric {entry['primary_metric']!r} is not among {list(values)}")
        if get_task_type(task.type).labelled:
            entry["labels"] = {k: v["count"] for k, v in summarize_labels(rows, max_examples=0).items()}
            entry["abstained"] = count_abstentions(rows)
        if task.signatures:
            entry["signatures"] = task.signatures
        if task.config is not None:
            entry["config"] = task.config
        metrics[name] = entry
        files[name] = (entry["samples"], rows)
    body = {**manifest, "kind": "eval", "format_version": FORMAT_VERSION, "seed": seed, "n_boot": n_boot,
            "versions": manifest.get("versions") or library_versions(),
            "tasks": {n: {"type": t.type, "tag": t.tag} for n, t in tasks.items()}}
    body["run_id"] = fingerprint({k: v for k, v in body.items() if k not in ("created_at", "run_id")}, metrics)
    body.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with atomic_path(out, is_dir=True) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # the temporary folder is private; the results folder is not
        (tmp / "samples").mkdir(parents=True)
        for rel, rows in files.values():
            with open(tmp / rel, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(body, indent=2, ensure_ascii=False, default=str) + "\n",
                                           encoding="utf-8")
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None


@dataclass
class Results:
    """A loaded results folder; samples are read on first use."""

    path: Path
    manifest: dict
    metrics: dict
    _rows: dict[str, list[dict]] = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        return self.manifest.get("run_id") or fingerprint(self.manifest, self.metrics)

    @property
    def suite_name(self) -> str:
        return self.manifest["suite"]["name"]

    @property
    def suite_fingerprint(self) -> str:
        return self.manifest["suite"]["fingerprint"]

    @property
    def label(self) -> str:
        """A short name for tables: the manifest's label, else the adapter's or model's folder name."""
        m = self.manifest
        if m.get("label"):
            return str(m["label"])
        if m.get("adapter"):
            # `dataforge train` writes RUN/adapter: the run's name is the one that tells tunes apart.
            path = Path(str(m["adapter"]).rstrip("/"))
            return f"{path.parent.name}/{path.name}" if path.name == "adapter" and path.parent.name else path.name
        return Path(str(m["model"]).rstrip("/")).name or str(m["model"])

    @property
    def task_names(self) -> list[str]:
        return list(self.metrics)

    def task(self, name: str) -> dict:
        if name not in self.metrics:
            raise InputError(f"no task {name!r} (tasks: {', '.join(self.metrics) or 'none'})", file=str(self.path))
        return self.metrics[name]

    def value(self, task: str, metric: str) -> float:
        return self.task(task)["metrics"][metric]["value"]

    def rows(self, task: str) -> list[dict]:
        if task not in self._rows:
            path = self.path / self.task(task)["samples"]
            if not path.is_file():
                raise InputError("samples file is missing", file=str(path))
            rows = []
            for lineno, row in iter_objects(path):
                if "sample_id" not in row:
                    raise InputError("a sample row must be an object with a sample_id", file=str(path), line=lineno)
                rows.append(row)
            self._rows[task] = rows
        return self._rows[task]


def load_results(path: str | Path) -> Results:
    """Open a results folder, with a clear error when `path` is something else."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("not an eval results folder (no such folder)", file=str(p))
    manifest_path = p / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not an eval results folder (no manifest.json)", file=str(p))
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("kind") != "eval":
        kind = manifest.get("kind") if isinstance(manifest, dict) else None
        raise InputError(f"not an eval results folder (manifest kind is {kind!r}, expected 'eval')",
                         file=str(manifest_path))
    try:
        _check_manifest(manifest)
    except ValueError as exc:
        raise InputError(str(exc), file=str(manifest_path)) from None
    metrics_path = p / "metrics.json"
    if not metrics_path.is_file():
        raise InputError("results folder has no metrics.json", file=str(p))
    metrics = _read_json(metrics_path)
    if not isinstance(metrics, dict):
        raise InputError("metrics.json must map task names to task results", file=str(metrics_path))
    return Results(p, manifest, metrics)

"""Run an eval suite for a model (and optionally the same model without its adapter) into results folders.

The runner reads each task's data, turns it into requests for the narrow `LanguageModel` interface,
and hands the scored rows to `dataforge.eval.results`. Every model output is cached per sample,
keyed by the model's fingerprint, the task and the sample's own request (its context and choices,
its text, or its prompt and decoding settings), so an interrupted eval resumes where it stopped
and a rerun after changing a gold answer or a metric rescores without running the model again.
Only model outputs are cached; metrics are always recomputed from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from dataforge.eval.config import EvalOptions
from dataforge.eval.lm import LanguageModel
from dataforge.eval.results import TaskResult, write_results
from dataforge.eval.task_types import TaskContext, get_task_type
from dataforge.eval.tasks import Suite, Task
from dataforge.util.fingerprint import fingerprint, sha256_tree

CACHE_FORMAT = 1
CHUNK = 256          # samples scored between two cache writes


@dataclass
class EvalTarget:
    """One results folder to write: a loaded model view and what it is."""

    lm: LanguageModel
    out: Path
    manifest: dict
    template: dict | None = None          # {"name", "sha256"} from the adapter's template.json
    label: str = "model"
    shared: Any = None                    # an engine shared with other targets, closed by its owner
    seed: int | None = None               # a re-run's own seed (noise floor); None: the options' seed


def default_cache_dir() -> Path:
    """Beside the history store: $DATAFORGE_HOME/eval-cache, else ~/.cache/dataforge/eval-cache."""
    home = os.environ.get("DATAFORGE_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "dataforge") / "eval-cache"


class SampleCache:
    """`<root>/<model key>/<task>.jsonl`: one line per scored sample, `{"key", "value"}`.

    Lines are appended and flushed after each chunk of samples; a line cut short by a kill is
    ignored on reading, so the cache never holds a half-written answer. `root=None` disables it.
    """

    def __init__(self, root: Path | None, model_key: str, task: str):
        self.path = None if root is None else Path(root) / model_key / f"{task}.jsonl"
        self.values: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and "key" in row:
                        self.values[row["key"]] = row["value"]

    def put(self, items: Sequence[tuple[str, Any]]) -> None:
        for key, value in items:
            self.values[key] = value
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in items))
            f.flush()
            os.fsync(f.fileno())


def request_key(*parts: Any) -> str:
    return xxhash.xxh3_64_hexdigest(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def cached_map(cache: SampleCache, keys: Sequence[str], compute: Callable[[list[int]], list[Any]],
               advance: Callable[[int], None], units: Sequence[int] | None = None) -> list[Any]:
    """Values for every key: cached ones read back, the rest computed in chunks and cached as they
    land. `advance` is told the progress units (default one per key) of the cached keys."""
    missing = [i for i, k in enumerate(keys) if k not in cache.values]
    gone = set(missing)
    advance(sum((units[i] if units else 1) for i in range(len(keys)) if i not in gone))
    for start in range(0, len(missing), CHUNK):
        idx = missing[start:start + CHUNK]
        cache.put(list(zip([keys[i] for i in idx], compute(idx), strict=True)))
    return [cache.values[k] for k in keys]


def limit_items(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


# ---------------------------------------------------------------------------------------------- suite


@dataclass
class SuiteRun:
    """What one eval call produced: a results folder per target, and each task's headline numbers."""

    folders: list[Path] = field(default_factory=list)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)   # label -> task -> metrics


def run_suite(suite: Suite, targets: Sequence[EvalTarget], options: EvalOptions, tokenizer: Any = None) -> SuiteRun:
    """Score every task of `suite` for every target and write one results folder per target."""
    from dataforge.util.progress import StepProgress

    result = SuiteRun()
    for target in targets:
        seed = options.seed if target.seed is None else target.seed
        # a re-run for the noise floor must run the model again, not read the first run's answers back
        cache_root = None if target.seed is not None else options.cache_dir
        tasks: dict[str, TaskResult] = {}
        templates: dict[str, dict] = {}
        model_key = fingerprint(CACHE_FORMAT, target.lm.fingerprint, options.dtype,
                                getattr(target.lm, "max_length", None))
        with StepProgress(f"eval {target.label}", enabled=options.progress) as progress:
            for task in suite.tasks:
                cache = SampleCache(cache_root, model_key, task.name)
                with progress.step(f"{target.label}: {task.name}") as step:
                    engine = target.manifest.get("generation", {}).get("key", options.backend)
                    context = TaskContext(target.lm, cache, options.limit, step, target, tokenizer, seed,
                                          engine, templates)
                    rows = get_task_type(task.type).run(task, context)
                    tasks[task.name] = _task_result(task, rows)
                    step.done(detail=f"{len(rows)} samples")
        manifest = {**target.manifest,
                    "suite": {"name": suite.name, "fingerprint": suite.fingerprint, "path": str(suite.path),
                              "gate": [g.model_dump(mode="json", exclude_none=True) for g in suite.spec.gate],
                              "vars": suite.vars},
                    "templates": templates, "data": suite_data_fingerprints(suite),
                    "options": {"batch_size": options.batch_size, "dtype": options.dtype, "limit": options.limit,
                                "seed": seed}}
        if hasattr(target.lm, "close"):      # free this target's generation engine before the next starts
            target.lm.close()
        folder = write_results(target.out, manifest, tasks, seed=seed, n_boot=options.n_boot)
        result.folders.append(folder)
        result.summary[target.label] = {name: _headline(t) for name, t in tasks.items()}
    return result


def suite_data_fingerprints(suite: Suite) -> dict[str, dict]:
    """Each task's local data file or folder and its sha256, so a results folder names the exact data
    it scored (a build's test split changes under the same path when the build is rerun)."""
    return {t.name: {"path": str(t.data_path), "sha256": sha256_tree(t.data_path)}
            for t in suite.tasks if t.data_path is not None and t.data_path.exists()}


def _task_result(task: Task, rows: list[dict]) -> TaskResult:
    entry = get_task_type(task.type)
    signatures = entry.signatures(task.spec) if entry.signatures else None
    primary = entry.primary(rows) if entry.primary else None
    return TaskResult(type=task.type, tag=task.tag.value, rows=rows,
                      config=task.spec.model_dump(mode="json"), signatures=signatures, primary_metric=primary)


def _headline(task: TaskResult) -> dict[str, float]:
    from dataforge.eval.aggregate import aggregate

    return aggregate(task.type, task.rows) if task.rows else {}

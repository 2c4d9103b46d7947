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

from dataforge.errors import ConfigError, InputError
from dataforge.eval.lm import HFLanguageModel, LanguageModel
from dataforge.eval.results import TaskResult, write_results
from dataforge.eval.task_types import TaskContext, get_task_type
from dataforge.eval.tasks import Suite, Task
from dataforge.util.fingerprint import fingerprint, sha256_tree

CACHE_FORMAT = 1
CHUNK = 256          # samples scored between two cache writes


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 16
    dtype: str = "float32"
    device: str | None = None
    backend: str = "transformers"
    limit: int | None = None
    seed: int = 1234
    n_boot: int = 1000
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class EvalTarget:
    """One results folder to write: a loaded model view and what it is."""

    lm: LanguageModel
    out: Path
    manifest: dict
    template: dict | None = None          # {"name", "sha256"} from the adapter's template.json
    label: str = "model"


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
    cache_root = options.cache_dir
    for target in targets:
        tasks: dict[str, TaskResult] = {}
        templates: dict[str, dict] = {}
        model_key = fingerprint(CACHE_FORMAT, target.lm.fingerprint, options.dtype,
                                getattr(target.lm, "max_length", None))
        with StepProgress(f"eval {target.label}", enabled=options.progress) as progress:
            for task in suite.tasks:
                cache = SampleCache(cache_root, model_key, task.name)
                with progress.step(f"{target.label}: {task.name}") as step:
                    context = TaskContext(target.lm, cache, options.limit, step, target, tokenizer, options.seed,
                                          options.backend, templates)
                    rows = get_task_type(task.type).run(task, context)
                    tasks[task.name] = _task_result(task, rows)
                    step.done(detail=f"{len(rows)} samples")
        manifest = {**target.manifest,
                    "suite": {"name": suite.name, "fingerprint": suite.fingerprint, "path": str(suite.path),
                              "gate": [g.model_dump(mode="json", exclude_none=True) for g in suite.spec.gate],
                              "vars": suite.vars},
                    "templates": templates, "data": suite_data_fingerprints(suite),
                    "options": {"batch_size": options.batch_size, "dtype": options.dtype, "limit": options.limit}}
        folder = write_results(target.out, manifest, tasks, seed=options.seed, n_boot=options.n_boot)
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


# ---------------------------------------------------------------------------------------------- models


def load_targets(model: str, adapter: str | None, out: Path, base_out: Path | None,
                 options: EvalOptions) -> tuple[list[EvalTarget], Any]:
    """The model loaded once; a target for it (with its adapter), and one for the bare base model
    when `base_out` is given. Returns (targets, tokenizer)."""
    import torch

    from dataforge.generate.base import load_backend
    from dataforge.models import load_causal_lm, load_tokenizer, model_fingerprint, resolve_model

    if base_out is not None and adapter is None:
        raise InputError("--base-out compares a model with and without its adapter; give --adapter too")
    dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model)
    loaded = load_causal_lm(model, adapter, dtype=dtype, device=device)
    path = resolve_model(model)

    def generator(with_adapter: bool) -> Callable[[], Any]:
        if options.backend == "transformers":
            extra = {"device": device, "dtype": options.dtype, "batch_size": options.batch_size,
                     "adapter": adapter if with_adapter else None}
        elif with_adapter and adapter:
            raise ConfigError(f"backend: '{options.backend}' cannot apply a peft adapter; use transformers, "
                              f"or merge the adapter into the model first")
        else:
            extra = {"dtype": options.dtype}
        return lambda: load_backend(options.backend, model, **extra)

    def target(with_adapter: bool, out_dir: Path, label: str) -> EvalTarget:
        fp = model_fingerprint(model, adapter if with_adapter else None)
        lm = HFLanguageModel(loaded, tokenizer, name=label, fingerprint=fp, batch_size=options.batch_size,
                             use_adapter=with_adapter, generator=generator(with_adapter))
        manifest = {"model": model, "model_path": path, "adapter": adapter if with_adapter else None,
                    "model_fingerprint": fp, "backend": options.backend}
        return EvalTarget(lm=lm, out=out_dir, manifest=manifest, label=label,
                          template=read_adapter_template(adapter) if adapter else None)

    targets = [target(True, out, "tuned" if adapter else "model")]
    if base_out is not None:
        targets.insert(0, target(False, base_out, "base"))
    return targets, tokenizer


def read_adapter_template(adapter: str) -> dict | None:
    """The adapter's template.json ({"name", "sha256", ...}), or None when it has none."""
    path = Path(adapter) / "template.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError("must be an object with the template's name", file=str(path), field="name")
    return data

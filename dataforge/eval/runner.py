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

from dataforge.errors import InputError
from dataforge.eval import perplexity
from dataforge.eval.config import EvalOptions
from dataforge.eval.leaderboard import viewer_for
from dataforge.eval.lm import LanguageModel
from dataforge.eval.multiple_choice import load_questions, sample_rows, score_questions
from dataforge.eval.results import TaskResult, sample_hash, write_results
from dataforge.eval.tasks import GenerationTask, MultipleChoiceTask, Suite, Task, TaskType, read_records
from dataforge.generate.base import SamplingParams
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


# ---------------------------------------------------------------------------------------------- tasks


def _limit(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def run_multiple_choice(task: Task, lm: LanguageModel, cache: SampleCache, limit: int | None,
                        step: Any) -> list[dict]:
    spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
    questions = _limit(load_questions(task, *viewer_for(spec)), limit)
    step.update(total=sum(len(q.view.choices) for q in questions))
    keys = [request_key("mc", q.context, q.view.choices) for q in questions]
    lls = cached_map(cache, keys, lambda idx: score_questions(lm, [questions[i] for i in idx], step.advance),
                     step.advance, [len(q.view.choices) for q in questions])
    return list(sample_rows(questions, lls, spec.macro_average_by))


def run_perplexity(task: Task, lm: LanguageModel, cache: SampleCache, limit: int | None, step: Any) -> list[dict]:
    docs = _limit(perplexity.read_corpus(task), limit)
    step.update(total=len(docs))
    keys = [request_key("rolling", d.text) for d in docs]

    def compute(idx: list[int]) -> list[list]:
        scores = lm.loglikelihood_rolling([docs[i].text for i in idx])
        step.advance(len(idx))
        return [[s.ll, s.n_tokens] for s in scores]

    return perplexity.corpus_rows(docs, cached_map(cache, keys, compute, step.advance))


def generation_prompts(task: Task, template: Any, tokenizer: Any, limit: int | None) -> list[dict]:
    """Each record rendered with the template the model was trained with, plus its reference."""
    from dataforge.data.templates import render

    spec: GenerationTask = task.spec  # type: ignore[assignment]
    records = read_records(task)
    out = []
    for i, row in enumerate(records.rows):
        origin, line = records.where(i)
        for name in (spec.instruction_field, spec.reference_field):
            if not isinstance(row.get(name), str):
                raise InputError("missing field" if row.get(name) is None else "must be text",
                                 file=origin, line=line, field=name)
        text_input = (row.get(spec.input_field) or "") if spec.input_field else ""
        system = (row.get(spec.system_field) or "") if spec.system_field else ""
        history = (row.get(spec.history_field) or []) if spec.history_field else []
        try:
            prompt, _ = render(template, row[spec.instruction_field], text_input, system, history, tokenizer=tokenizer)
        except InputError as exc:
            raise InputError(exc.detail, file=origin, line=line, field=exc.field) from None
        out.append({"prompt": prompt, "reference": row[spec.reference_field], "origin": f"{origin}:{line}"})
        if limit is not None and len(out) >= limit:
            break
    return out


def run_generation(task: Task, lm: LanguageModel, cache: SampleCache, limit: int | None, step: Any,
                   template: Any, tokenizer: Any, seed: int, backend: str) -> list[dict]:
    from dataforge.eval.metrics import score_generation

    spec: GenerationTask = task.spec  # type: ignore[assignment]
    items = generation_prompts(task, template, tokenizer, limit)
    step.update(total=len(items))
    params = SamplingParams(temperature=0.0, max_tokens=spec.max_tokens, stop=tuple(spec.stop), seed=seed)
    keys = [request_key("generate", backend, it["prompt"], params.max_tokens, params.stop) for it in items]

    def compute(idx: list[int]) -> list[dict]:
        gens = lm.generate([items[i]["prompt"] for i in idx], params, progress=step.advance)
        return [{"text": g.text, "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens}
                for g in gens]

    outputs = cached_map(cache, keys, compute, step.advance)
    rows = [{"sample_id": sample_hash(it["prompt"]), **it, "prediction": o["text"],
             "finish_reason": o["finish_reason"], "completion_tokens": o["completion_tokens"]}
            for it, o in zip(items, outputs, strict=True)]
    return score_generation(rows, spec.scoring)


# ---------------------------------------------------------------------------------------------- suite


@dataclass
class SuiteRun:
    """What one eval call produced: a results folder per target, and each task's headline numbers."""

    folders: list[Path] = field(default_factory=list)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)   # label -> task -> metrics


def resolve_template(task: GenerationTask, target: EvalTarget):
    """The adapter's training template wins; a task's own `template:` serves models without one."""
    from dataforge.data.templates import load_template

    if target.template is not None:
        tpl = load_template(target.template["name"])
        recorded = target.template.get("sha256")
        if recorded and tpl.sha256 != recorded:
            raise InputError(f"template '{tpl.name}' changed since the adapter was trained (sha256 "
                             f"{tpl.sha256[:12]} here, {recorded[:12]} in template.json); evaluating with it "
                             f"would not use the training prompt format", file=str(tpl.path))
        return tpl
    if task.template is None:
        raise InputError(f"generation task {task.name} needs a prompt template: set `template:` in the task, "
                         f"or evaluate an adapter whose folder holds template.json")
    return load_template(task.template)


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
                    if task.type is TaskType.multiple_choice:
                        rows = run_multiple_choice(task, target.lm, cache, options.limit, step)
                    elif task.type is TaskType.perplexity:
                        rows = run_perplexity(task, target.lm, cache, options.limit, step)
                    else:
                        tpl = resolve_template(task.spec, target)
                        templates[task.name] = {"name": tpl.name, "sha256": tpl.sha256}
                        engine = target.manifest.get("generation", {}).get("key", options.backend)
                        rows = run_generation(task, target.lm, cache, options.limit, step, tpl, tokenizer,
                                              options.seed, engine)
                    tasks[task.name] = _task_result(task, rows)
                    step.done(detail=f"{len(rows)} samples")
        manifest = {**target.manifest,
                    "suite": {"name": suite.name, "fingerprint": suite.fingerprint, "path": str(suite.path),
                              "gate": [g.model_dump(mode="json", exclude_none=True) for g in suite.spec.gate],
                              "vars": suite.vars},
                    "templates": templates, "data": suite_data_fingerprints(suite),
                    "options": {"batch_size": options.batch_size, "dtype": options.dtype, "limit": options.limit}}
        if hasattr(target.lm, "close"):      # free this target's generation engine before the next starts
            target.lm.close()
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
    signatures = None
    if task.type is TaskType.generation:
        from dataforge.eval.metrics import metric_signatures

        signatures = metric_signatures(task.spec.scoring)
    primary = "mc2" if task.type is TaskType.multiple_choice and rows and "mc2" in rows[0]["metrics"] else None
    return TaskResult(type=task.type.value, tag=task.tag.value, rows=rows,
                      config=task.spec.model_dump(mode="json"), signatures=signatures, primary_metric=primary)


def _headline(task: TaskResult) -> dict[str, float]:
    from dataforge.eval.aggregate import aggregate

    return aggregate(task.type, task.rows) if task.rows else {}

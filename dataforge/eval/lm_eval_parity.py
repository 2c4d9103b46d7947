"""Score our leaderboard tasks with lm-evaluation-harness itself, on the same local files, to check our numbers.

Each exported config `include`s lm-eval's own installed task YAML (arc_easy.yaml, hellaswag.yaml,
mmlu_<subject>.yaml, truthfulqa_mc1/mc2.yaml) and changes only where the data comes from: the same
local files dataforge reads, through `dataset_path: json`. The prompt, few-shot and scoring rules
are therefore lm-eval's, untouched. `lm_eval_scores` runs them with `lm_eval.simple_evaluate` and
reports them under our task and metric names; the parity test and benchmarks/bench_eval.py use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dataforge.errors import InputError
from dataforge.eval.leaderboard import MMLU_SUBJECTS
from dataforge.eval.tasks import ChoiceFormat, MultipleChoiceTask, Task, read_records, split_file

PREFIX = "df_"

# lm-eval config (relative to lm_eval/tasks), and the split names it uses for eval and examples.
# arc_challenge.yaml is arc_easy.yaml with another dataset_name, which the export replaces anyway.
_SOURCES: dict[ChoiceFormat, tuple[str, dict[str, str]]] = {
    ChoiceFormat.arc: ("arc/arc_easy.yaml", {"test_split": "test", "training_split": "train"}),
    ChoiceFormat.hellaswag: ("hellaswag/hellaswag.yaml", {"validation_split": "validation", "training_split": "train"}),
    ChoiceFormat.truthfulqa_mc1: ("truthfulqa/truthfulqa_mc1.yaml", {"validation_split": "validation"}),
    ChoiceFormat.truthfulqa_mc2: ("truthfulqa/truthfulqa_mc2.yaml", {"validation_split": "validation"}),
}


def lm_eval_tasks_dir() -> Path:
    try:
        import lm_eval.tasks
    except ImportError:
        raise InputError("lm-eval is not installed: pip install lm-eval") from None
    return Path(lm_eval.tasks.__file__).parent


def export_task(task: Task, out_dir: Path, cache_dir: Path | None = None) -> list[str]:
    """Write the lm-eval config(s) of one leaderboard task into `out_dir`; returns lm-eval task names
    (one per MMLU subject, since lm-eval scores each subject as its own task). `cache_dir` is where
    `datasets` may cache the json it reads (default: its own cache)."""
    spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"cache_dir": str(cache_dir)} if cache_dir else {}
    if spec.format is ChoiceFormat.mmlu:
        return _export_mmlu(task, out_dir, extra)
    if spec.format not in _SOURCES:
        raise InputError(f"task {task.name}: format '{spec.format.value}' has no lm-eval counterpart")
    source, splits = _SOURCES[spec.format]
    files = {}
    for key, split in splits.items():
        ours = spec.data.split if key in ("test_split", "validation_split") else spec.fewshot.split
        files[split] = str(_local_file(task, ours))
    name = PREFIX + task.name
    cfg = {"include": str(lm_eval_tasks_dir() / source), "task": name, "tag": [],
           "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files, **extra},
           "training_split": None, "validation_split": None, "test_split": None, **splits,
           "num_fewshot": spec.shots}
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return [name]


def _export_mmlu(task: Task, out_dir: Path, extra: dict) -> list[str]:
    """One lm-eval task per subject over per-subject copies of our test and dev files."""
    spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
    by_split = {}
    for split in (spec.data.split, spec.fewshot.split):
        rows: dict[str, list[dict]] = {}
        for row in read_records(task, split).rows:
            rows.setdefault(row["subject"], []).append(row)
        by_split[split] = rows
    names = []
    for subject in MMLU_SUBJECTS:
        if subject not in by_split[spec.data.split]:
            continue
        files = {}
        for split, rows in by_split.items():
            f = out_dir / "mmlu_data" / f"{subject}.{split}.jsonl"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.get(subject, [])),
                         encoding="utf-8")
            files[split] = str(f)
        name = f"{PREFIX}mmlu_{subject}"
        cfg = {"include": str(lm_eval_tasks_dir() / "mmlu" / "default" / f"mmlu_{subject}.yaml"),
               "task": name, "tag": [], "dataset_path": "json", "dataset_name": None,
               "dataset_kwargs": {"data_files": files, **extra}, "test_split": spec.data.split,
               "fewshot_split": spec.fewshot.split, "num_fewshot": spec.shots}
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        names.append(name)
    return names


def export_tasks(tasks: Sequence[Task], out_dir: Path, cache_dir: Path | None = None) -> dict[str, list[str]]:
    """{our task name: [lm-eval task names]} for every task, configs written under `out_dir`."""
    return {t.name: export_task(t, out_dir, cache_dir) for t in tasks}


def _local_file(task: Task, split: str) -> Path:
    f = split_file(task, split)
    if f is None:
        raise InputError(f"task {task.name}: no local file for split '{split}' (lm-eval export needs local data)",
                         file=str(task.data_path))
    return f.resolve()


@dataclass
class LmEvalRun:
    """lm-eval's numbers under our task and metric names, and the requests it scored, per doc."""

    scores: dict[str, dict[str, float]]
    requests: dict[str, list[list[tuple[str, str]]]]


def lm_eval_scores(tasks: Sequence[Task], lm: Any, workdir: Path) -> LmEvalRun:
    """Run lm-eval on our tasks' local files with `lm` (an lm_eval LM, e.g. HFLM).

    MMLU comes back as lm-eval's per-subject scores combined both ways: `acc` weighted by subject
    size (lm-eval's group score) and `acc_macro`, the plain mean of the subjects. Requests are in
    lm-eval's order (MMLU: subject by subject).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = export_tasks(tasks, workdir / "tasks", cache_dir=workdir / "datasets")
    manager = TaskManager(include_path=str(workdir / "tasks"))
    out = simple_evaluate(model=lm, tasks=[n for group in names.values() for n in group], task_manager=manager,
                          log_samples=True, fewshot_random_seed=1234)
    results, counts = out["results"], out["n-samples"]
    run = LmEvalRun({}, {})
    for task in tasks:
        spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
        group = names[task.name]
        run.requests[task.name] = [[tuple(a) for a in s["arguments"]]
                                   for n in group for s in sorted(out["samples"][n], key=lambda s: s["doc_id"])]
        if spec.format is ChoiceFormat.mmlu:
            accs = [results[n]["acc,none"] for n in group]
            sizes = [counts[n]["effective"] for n in group]
            run.scores[task.name] = {"acc": sum(a * k for a, k in zip(accs, sizes, strict=True)) / sum(sizes),
                                     "acc_macro": sum(accs) / len(accs)}
        elif spec.format is ChoiceFormat.truthfulqa_mc2:
            run.scores[task.name] = {"mc2": results[group[0]]["acc,none"]}
        else:
            r = results[group[0]]
            run.scores[task.name] = {m: r[f"{m},none"] for m in ("acc", "acc_norm") if f"{m},none" in r}
    return run

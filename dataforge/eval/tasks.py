"""Eval tasks and suites are YAML files; this module is their schema and their loader.

A task says what data to read and how to turn a record into something a model is scored on. There
are three built-in types (`generation`, `perplexity`, `multiple_choice`, each registered in
`dataforge.eval.task_types`); each is one pydantic model, so
the YAML, the validation messages and the docs come from the same place. A suite lists task files
and tags each one `domain` or `general`.

The suite schema, the shared task fields (`name`, `data`) and the `${var}` rules live in
`dataforge.config.suite`, which the build's decontaminate stage reads too; they are re-exported here.
Data paths may name variables: that is how a suite points at a build's output without hard-coding
it: `path: ${build}/splits/test.parquet` with `--var build=runs/build_alpaca`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dataforge.config import suite as _suite
from dataforge.config.base import StrictModel, validate_config
from dataforge.config.suite import (  # noqa: F401  (re-exported: eval's public names)
    DATA_SUFFIXES,
    DataSpec,
    GateRule,
    Suite,
    SuiteSpec,
    SuiteTaskRef,
    Tag,
    Task,
    builtin_vars,
    expand_vars,
    matches_where,
    resolve_vars,
    split_file,
)
from dataforge.config.suite import TaskBase as _TaskBase
from dataforge.errors import ConfigError, InputError
from dataforge.eval.metrics import GenerationScoring
from dataforge.paths import evals_dir
from dataforge.util.fieldpath import parse_path
from dataforge.util.jsonl import iter_objects, read_object_list


class ChoiceFormat(str, Enum):
    """How a record becomes a question: `fields` reads the fields named in the task, the others
    reproduce lm-evaluation-harness's prompt formats for the Hugging Face copies of those sets."""

    fields = "fields"
    arc = "arc"
    hellaswag = "hellaswag"
    mmlu = "mmlu"
    truthfulqa_mc1 = "truthfulqa_mc1"
    truthfulqa_mc2 = "truthfulqa_mc2"


class FewshotSampler(str, Enum):
    random = "random"
    first_n = "first_n"


class Document(str, Enum):
    file = "file"
    paragraph = "paragraph"
    line = "line"


class FewshotSpec(StrictModel):
    split: str = Field("train", description="Split the examples are drawn from (same data folder or hub dataset).")
    sampler: FewshotSampler = Field(FewshotSampler.random, description="random: seeded draw whose state carries from doc to doc; first_n: the first k in file order.")
    seed: int = Field(1234, description="Seed of the random draw (lm-eval's default is 1234).")
    exclude_eval_doc: bool = Field(False, description="Draw k+1 and drop the doc being scored if drawn (lm-eval does this when the task's few-shot and test splits are the same, or both unset as for HellaSwag).")
    group_by: str | None = Field(None, description="Draw only from examples whose value of this field equals the scored doc's (MMLU: subject); each group has its own seeded draw.")


class GenerationTask(_TaskBase):
    type: Literal["generation"] = Field(description="Prompt the model, generate, and score the text against a reference.")
    template: str | None = Field(None, description="Prompt template name or path; unset: the adapter's template.json (the one it was trained with).")
    instruction_field: str = Field("instruction", description="Record field rendered as the instruction. Every *_field may be a path into nested fields, e.g. instances[0].input.")
    input_field: str | None = Field("input", description="Record field rendered as the input (optional context); null for none.")
    system_field: str | None = Field("system", description="Record field holding a system message, used when the record has it.")
    history_field: str | None = Field("history", description="Record field holding earlier turns ([{role, content}]), used when the record has it.")
    reference_field: str = Field("output", description="Record field holding the reference answer, e.g. output or instances[0].output.")
    scoring: GenerationScoring = Field(default_factory=GenerationScoring, description="Metrics, output format and error-taxonomy rules.")
    max_tokens: int = Field(256, ge=1, description="Most new tokens per answer (greedy decoding).")
    stop: list[str] = Field(default_factory=list, description="Strings that end an answer.")

    @field_validator("instruction_field", "input_field", "system_field", "history_field", "reference_field")
    @classmethod
    def _field_paths(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v


class PerplexityTask(_TaskBase):
    type: Literal["perplexity"] = Field(description="Rolling-window loglikelihood of a text corpus, as lm-eval's loglikelihood_rolling.")
    document: Document = Field(Document.paragraph, description="How a .txt file splits into scored documents: the whole file, blank-line separated paragraphs, or lines.")
    text_field: str = Field("text", description="Record field holding the text (jsonl/json/parquet data).")


class MultipleChoiceTask(_TaskBase):
    type: Literal["multiple_choice"] = Field(description="Score each choice's loglikelihood after the context; report acc and acc_norm.")
    format: ChoiceFormat = Field(ChoiceFormat.fields, description="Record schema and prompt format: `fields` (the three fields below) or a leaderboard set's own.")
    prompt: str | None = Field(None, description="fields format: the context, with {field} placeholders, e.g. 'Question: {question}\\nAnswer:'.")
    choices: str | None = Field(None, description="fields format: the record field holding the list of choice texts.")
    gold: str | None = Field(None, description="fields format: the record field holding the gold choice (index, or the choice's text).")
    description: str = Field("", description="fields format: text put before the examples and the question.")
    shots: int = Field(0, ge=0, description="Number of solved examples before the question.")
    fewshot: FewshotSpec = Field(default_factory=FewshotSpec, description="Where and how the examples are drawn.")
    macro_average_by: str | None = Field(None, description="Also report acc_macro: the unweighted mean over the groups of this field (MMLU: subject), as Open LLM Leaderboard v1 averaged MMLU.")

    @model_validator(mode="after")
    def _fields_format(self):
        given = [k for k in ("prompt", "choices", "gold") if getattr(self, k) is not None]
        if self.format == ChoiceFormat.fields:
            missing = [k for k in ("prompt", "choices", "gold") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"format 'fields' needs {', '.join(missing)}")
        elif given or self.description:
            raise ValueError(f"format '{self.format.value}' has its own prompt; remove "
                             f"{', '.join(given + (['description'] if self.description else []))}")
        return self


TaskSpec = GenerationTask | PerplexityTask | MultipleChoiceTask   # the built-in types; the registry may add more


def parse_task(data: Any, where: str) -> TaskSpec:
    """Validate one task mapping; `type` picks the model so errors name plain field paths."""
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", where)
    from dataforge.eval.task_types import get_task_type, task_type_names

    kind = data.get("type")
    names = task_type_names()
    if kind not in names:
        got = "missing" if kind is None else f"got {kind!r}"
        raise ConfigError(f"type: must be one of {', '.join(names)} ({got})", where)
    return validate_config(get_task_type(kind).spec, data, where)


def load_task(path: str | Path, tag: Tag | str = Tag.general, variables: dict[str, str] | None = None) -> Task:
    """Read and validate one task YAML; the data path is resolved but not read."""
    return _suite.load_task(path, tag, variables, parse=parse_task)


def load_suite(path: str | Path, variables: dict[str, str] | None = None, only: list[str] | None = None) -> Suite:
    """Read a suite and every task it names, reporting all problems at once."""
    return _suite.load_suite(path, variables, only, parse=parse_task)


def find_task_files(root: str | Path | None = None) -> list[Path]:
    """Every task YAML under evals/tasks (used by the test that validates all shipped YAML)."""
    base = Path(root) if root else evals_dir() / "tasks"
    return sorted(p for p in base.rglob("*.yaml") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Reading a task's records


@dataclass(frozen=True)
class Records:
    """Rows of one split, with where each came from, so an error can name the file and line."""

    origin: str
    rows: list[dict]
    lines: list[int]

    def where(self, i: int) -> tuple[str, int]:
        return self.origin, self.lines[i]


def read_records(task: Task, split: str | None = None) -> Records:
    """The rows of a split: from the local file when it exists, else from the hub copy."""
    split = split or task.spec.data.split
    f = split_file(task, split)
    data = task.spec.data
    if f is not None:
        return _keep_where(read_table(f), data.where)
    if data.hub:
        return _keep_where(_read_hub(data.hub, data.subset, split), data.where)
    if task.fewshot_path is not None and split != data.split:
        raise InputError(f"few-shot file does not exist (task {task.name}, data.fewshot_path)",
                         file=str(task.fewshot_path))
    if task.data_path is not None and task.data_path.is_dir():
        raise InputError(f"no {split}.jsonl, {split}.json or {split}.parquet in this folder "
                         f"(task {task.name})", file=str(task.data_path))
    if task.data_path is not None and task.data_path.is_file():
        raise InputError(f"task {task.name} needs split '{split}', but data.path is one file; set "
                         f"data.fewshot_path to the file of examples, or point data.path at a folder holding "
                         f"one file per split", file=str(task.data_path))
    raise InputError(f"data file does not exist (task {task.name})", file=str(task.data_path))


def required_splits(task: Task) -> list[str]:
    """The splits a task reads: the one it scores, and the few-shot one when it shows examples."""
    spec = task.spec
    splits = [spec.data.split]
    if isinstance(spec, MultipleChoiceTask) and spec.shots and spec.fewshot.split not in splits:
        splits.append(spec.fewshot.split)
    return splits


def check_suite_data(suite: Suite) -> None:
    """Every split every task reads is a local file, or comes from the hub: checked before a model is
    loaded, so a missing file costs seconds, not a model load and the tasks before it."""
    problems = []
    for task in suite.tasks:
        for split in required_splits(task):
            if split_file(task, split) is not None or task.spec.data.hub:
                continue
            try:
                read_records(task, split)
            except InputError as exc:
                problems.append(str(exc))
    if problems:
        raise InputError("; ".join(problems))


def _keep_where(records: Records, where: dict[str, Any]) -> Records:
    if not where:
        return records
    keep = [i for i, r in enumerate(records.rows) if matches_where(r, where)]
    return Records(records.origin, [records.rows[i] for i in keep], [records.lines[i] for i in keep])


def read_table(path: Path) -> Records:
    if path.suffix == ".jsonl":
        pairs = list(iter_objects(path))
        return Records(str(path), [row for _, row in pairs], [n for n, _ in pairs])
    if path.suffix == ".json":
        rows = read_object_list(path, "data")
        return Records(str(path), rows, list(range(len(rows))))
    if path.suffix == ".parquet":
        import polars as pl

        try:
            rows = pl.read_parquet(path).to_dicts()
        except Exception as exc:  # polars raises several types for a corrupt file
            raise InputError(f"cannot read parquet: {exc}", file=str(path)) from None
        return Records(str(path), rows, list(range(len(rows))))
    raise InputError(f"unsupported data file type '{path.suffix}' (use {', '.join(DATA_SUFFIXES[:3])})", file=str(path))


def _read_hub(hub: str, subset: str | None, split: str) -> Records:
    import datasets

    try:
        ds = datasets.load_dataset(hub, subset, split=split)
    except Exception as exc:  # offline, unknown id, unknown split: all mean the same to the user
        raise InputError(f"cannot load hub dataset {hub} ({subset or 'default'}, split {split}): "
                         f"{str(exc).splitlines()[0][:300]}") from None
    rows = ds.to_list()
    return Records(f"{hub}:{subset or 'default'}:{split}", rows, list(range(len(rows))))

"""The schema of eval suites and of where a task's data lives, shared by `eval` and the build.

`dataforge eval` scores a suite's tasks; the build's decontaminate stage drops training records that
overlap the same tasks. Both read suites through this module, so a suite means the same records to
both: the same `${var}` rules, the same data file for a split, the same `data.where` filter. It lives
in `config/` so that `data` can use it without importing `eval`.

A task file's type-specific fields (metrics, prompts, few-shot settings) are eval's business and
are declared by the task models in `dataforge.eval.tasks`, which extend `TaskBase` here. The build
reads a task through `TaskHeader`, which validates the fields every task shares (`name`, `type`,
`data`) and leaves the rest to eval's own validation.

Data paths are relative to the task YAML and may name variables as `${name}`: the suite's `vars:`
give defaults, `dataforge eval --var name=value` overrides them, and `${assets}` / `${evals}` are
always defined. A variable's value is a path relative to the current directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from dataforge.config.base import StrictModel, read_yaml, validate_config
from dataforge.errors import ConfigError
from dataforge.paths import ASSETS_DIR, evals_dir
from dataforge.util.fingerprint import fingerprint

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


class Tag(str, Enum):
    domain = "domain"
    general = "general"


class DataSpec(StrictModel):
    path: str | None = Field(None, description="A data file, or a folder holding one <split>.jsonl|json|parquet per split; relative to the task YAML; may use ${var}.")
    fewshot_path: str | None = Field(None, description="A file of few-shot examples, for a task whose `path` is one file (the split scored); relative to the task YAML; may use ${var}.")
    hub: str | None = Field(None, description="Hugging Face dataset id, read when `path` is unset or missing (needs a network).")
    subset: str | None = Field(None, description="Hub dataset config name (e.g. ARC-Easy).")
    split: str = Field("test", description="Split the task is scored on.")
    where: dict[str, str | int | bool] = Field(default_factory=dict, description="Keep only records whose fields equal these values, e.g. {source: domain}.")

    @model_validator(mode="after")
    def _some_source(self):
        if self.path is None and self.hub is None:
            raise ValueError("give `path` (local file or folder) or `hub` (dataset id)")
        return self


class TaskBase(StrictModel):
    name: str = Field(description="Task name; unique within a suite; names the samples file.", pattern=NAME_PATTERN)
    data: DataSpec = Field(description="Where the records come from.")


class TaskHeader(TaskBase):
    """What every task declares, whatever its type: the build needs no more to find the texts a task
    scores. The type-specific fields are validated by eval's task models."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(description="A registered task type: generation, perplexity, multiple_choice, or one added to "
                                  "dataforge.eval.task_types.")


class SuiteTaskRef(StrictModel):
    task: str = Field(description="Task YAML, relative to the suite file.")
    tag: Tag = Field(description="domain (what the tune is for) or general (what it must not forget).")


class GateRule(StrictModel):
    task: str = Field(description="Task name.")
    metric: str = Field(description="Metric name of that task.")
    max_drop: float | None = Field(None, ge=0, description="Fail when tuned - base falls below -max_drop (in the metric's units).")
    min: float | None = Field(None, description="Fail when the tuned value is below this.")

    @model_validator(mode="after")
    def _one_bound(self):
        if self.max_drop is None and self.min is None:
            raise ValueError("give max_drop or min")
        return self


class SuiteSpec(StrictModel):
    name: str = Field(description="Suite name, recorded in every results folder.", pattern=NAME_PATTERN)
    description: str = Field("", description="What the suite checks.")
    vars: dict[str, str] = Field(default_factory=dict, description="Default values of ${var} in task data paths; --var NAME=VALUE overrides.")
    tasks: list[SuiteTaskRef] = Field(min_length=1, description="The tasks, each tagged domain or general.")
    gate: list[GateRule] = Field(default_factory=list, description="Thresholds that `dataforge compare` checks.")

    @field_validator("vars")
    @classmethod
    def _var_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"variable names must be identifiers: {', '.join(bad)}")
        return v


@dataclass(frozen=True)
class Task:
    """A validated task with its place in a suite and its paths resolved."""

    spec: Any  # a TaskBase: eval's full task model, or the build's TaskHeader
    tag: Tag
    yaml_path: Path
    data_path: Path | None
    fewshot_path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def type(self) -> str:
        return str(self.spec.type)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.spec.model_dump(mode="json"))

    @property
    def run_vars(self) -> list[str]:
        """Variables of the data path other than `${assets}`/`${evals}`: the path names a run's own
        output (e.g. `${build}/splits/test.parquet`), not a fixed eval set."""
        return sorted({m.group(1) for m in _VAR.finditer(self.spec.data.path or "")} - builtin_vars().keys())


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    tasks: tuple[Task, ...]
    vars: dict[str, str]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.spec.model_dump(mode="json"), [(t.tag.value, t.fingerprint) for t in self.tasks])


def resolve_suite(suite: str, field: str | None = None) -> Path:
    """A suite YAML path, or the name of a suite shipped in evals/ (`regression`, `leaderboard`).
    `field` is the config key that named it, for the error message."""
    p = Path(suite).expanduser()
    if p.is_file():
        return p
    shipped = evals_dir() / f"{suite}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(f.stem for f in evals_dir().glob("*.yaml"))
    where = f"{field}: " if field else ""
    raise ConfigError(f"{where}suite '{suite}' is neither a file nor a shipped suite (shipped: {', '.join(names)})")


def builtin_vars() -> dict[str, str]:
    return {"assets": str(ASSETS_DIR), "evals": str(evals_dir())}


def resolve_vars(variables: dict[str, str]) -> dict[str, str]:
    """Variable values are paths relative to the current directory; pin them down once."""
    return {k: str(Path(v).expanduser().resolve()) for k, v in variables.items()}


def expand_vars(text: str, variables: dict[str, str], where: str) -> str:
    """Replace every ${name}; an unknown name is a ConfigError that says how to define it."""
    missing = sorted({m.group(1) for m in _VAR.finditer(text)} - variables.keys())
    if missing:
        raise ConfigError(f"data.path: ${{{missing[0]}}} is not defined; pass --var {missing[0]}=VALUE "
                          f"or set it under the suite's `vars:`", where)
    return _VAR.sub(lambda m: variables[m.group(1)], text)


def parse_header(data: Any, where: str) -> TaskHeader:
    """Validate the shared part of one task mapping (the build's view of a task)."""
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", where)
    return validate_config(TaskHeader, data, where)


TaskParser = Callable[[Any, str], TaskBase]


def load_task(path: str | Path, tag: Tag | str = Tag.general, variables: dict[str, str] | None = None, *,
              parse: TaskParser = parse_header) -> Task:
    """Read and validate one task YAML with `parse`; the data path is resolved but not read."""
    path = Path(path)
    spec = parse(read_yaml(path), str(path))
    merged = {**builtin_vars(), **resolve_vars(variables or {})}

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(expand_vars(value, merged, str(path))).expanduser()
        return p if p.is_absolute() else (path.parent / p).resolve()

    return Task(spec=spec, tag=Tag(tag), yaml_path=path, data_path=resolve(spec.data.path),
                fewshot_path=resolve(spec.data.fewshot_path))


def load_suite(path: str | Path, variables: dict[str, str] | None = None, only: list[str] | None = None, *,
               parse: TaskParser = parse_header) -> Suite:
    """Read a suite and every task it names (each with `parse`), reporting all problems at once."""
    path = Path(path)
    spec = validate_config(SuiteSpec, read_yaml(path), str(path))
    merged = {**spec.vars, **(variables or {})}
    tasks, problems = [], []
    for i, ref in enumerate(spec.tasks):
        task_path = (path.parent / ref.task).resolve()
        try:
            tasks.append(load_task(task_path, ref.tag, merged, parse=parse))
        except ConfigError as exc:
            problems.append(f"tasks.{i}.task ({ref.task}): " + "; ".join(exc.problems))
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"tasks: task names must be unique, repeated: {', '.join(dupes)}")
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            problems.append(f"--task {', '.join(unknown)}: not in this suite (has {', '.join(names)})")
        tasks = [t for t in tasks if t.name in only]
    for i, rule in enumerate(spec.gate):
        if rule.task not in names:
            problems.append(f"gate.{i}.task: {rule.task!r} is not a task of this suite")
    if problems:
        raise ConfigError(problems, str(path))
    return Suite(spec=spec, path=path, tasks=tuple(tasks), vars=merged)


def matches_where(row: dict, where: dict[str, Any]) -> bool:
    """Whether a record passes a task's `data.where`: every listed field equals its value."""
    return all(row.get(k) == v for k, v in where.items())


def split_file(task: Task, split: str) -> Path | None:
    """The local file holding `split`: `fewshot_path` for any split but the scored one when it is set,
    the data path itself when it is a file, else <folder>/<split>.*"""
    if task.fewshot_path is not None and split != task.spec.data.split:
        return task.fewshot_path if task.fewshot_path.is_file() else None
    p = task.data_path
    if p is None or not p.exists():
        return None
    if p.is_file():
        return p if split == task.spec.data.split else None
    for suffix in DATA_SUFFIXES:
        if (p / f"{split}{suffix}").is_file():
            return p / f"{split}{suffix}"
    return None

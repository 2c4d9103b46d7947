"""Task types: one registry entry each, so a new kind of task is one module and one line.

An entry says everything the rest of eval needs to know about a type: the pydantic model its YAML
validates against, the function that scores a task's records with a model, the metrics preferred as
the primary one, and, for metrics that are not means of per-sample values, how to aggregate sums.
The runner, the results folder, compare and the report ask the registry instead of testing names.
The built-in types are registered on first use (their modules import the runner, which imports
this one); `register_task_type` adds another, from a plugin or a test.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BUILTIN_MODULES = ("generation", "perplexity", "multiple_choice", "preference")


@dataclass(frozen=True)
class CorpusSums:
    """Metrics computed from per-sample sums (perplexity from `ll` and token counts), so the task's
    number and every bootstrap replicate are exact ratios of sums, not means of ratios."""

    fields: tuple[str, ...]                                         # numeric row fields that are summed
    metrics: tuple[str, ...]                                        # the metrics computed from them
    compute: Callable[[np.ndarray], dict[str, np.ndarray]]          # (replicates, fields) -> {metric: values}


@dataclass
class TaskContext:
    """What a task type's runner gets besides its task: the model view, the per-sample cache, the
    progress step, and the run's settings. `templates` collects {task: {name, sha256}} for the manifest."""

    lm: Any
    cache: Any
    limit: int | None
    step: Any
    target: Any
    tokenizer: Any
    seed: int
    backend: str
    templates: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskTypeEntry:
    name: str
    spec: type                                                      # the task YAML's pydantic model
    run: Callable[[Any, TaskContext], list[dict]]                   # (task, context) -> scored rows
    primary_metrics: tuple[str, ...]                                # preferred primary metrics, in order
    sums: CorpusSums | None = None
    primary: Callable[[list[dict]], str | None] | None = None       # a primary metric chosen from the rows
    signatures: Callable[[Any], dict[str, str]] | None = None       # spec -> what each metric's number means
    labelled: bool = False                                          # rows carry error-taxonomy labels
    figure_metric: str | None = None                                # plotted apart (a scale unlike the others)


_REGISTRY: dict[str, TaskTypeEntry] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for name in BUILTIN_MODULES:
            register_task_type(importlib.import_module(f"{__name__}.{name}").ENTRY)


def register_task_type(entry: TaskTypeEntry) -> None:
    """Add a task type; a name already taken by another entry is an error."""
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"task type {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def unregister_task_type(name: str) -> None:
    _REGISTRY.pop(name, None)


def task_type_names() -> list[str]:
    _load_builtins()
    return list(_REGISTRY)


def get_task_type(name: str) -> TaskTypeEntry:
    """The entry of a registered type; an unknown name fails and suggests the nearest one."""
    _load_builtins()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown task type {name!r} (registered: {', '.join(_REGISTRY)}){hint}")
    return _REGISTRY[name]

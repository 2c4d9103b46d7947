"""What every tracker backend does, and the group that fans one run out to the chosen backends.

A backend sees four calls: numbers at a step (`log`), final numbers (`summary`), a text document
(`text`: the config, a table) and a file (`file`: the manifest, metrics.json). Train, eval and compare
describe what they log in those terms (`dataforge.track.report`), so a new backend is one module.
"""

from __future__ import annotations

import atexit
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.errors import DataforgeError
from dataforge.track.config import TrackingConfig
from dataforge.track.registry import pip_package, tracker_class

DEFAULT_PROJECT = "dataforge"


class TrackerUnavailable(DataforgeError):
    """A chosen tracker's library is not installed, or it refused to start; raised before any work."""


@dataclass
class RunInfo:
    kind: str                      # train, eval or compare
    name: str
    project: str
    config: dict[str, Any]
    tensorboard_dir: Path
    tags: list[str] = field(default_factory=list)
    resume_step: int | None = None  # a resumed train run: what its trackers logged after this step is redone


class Tracker(ABC):
    """One backend's run. Subclasses import their library in `__init__`, so a missing one fails there."""

    name: str

    @abstractmethod
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def summary(self, metrics: dict[str, float]) -> None: ...

    @abstractmethod
    def text(self, name: str, text: str) -> None: ...

    @abstractmethod
    def file(self, path: Path) -> None: ...

    @abstractmethod
    def finish(self, failed: bool) -> None: ...


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the shape trackers' params and config tables take."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def numbers(data: dict[str, Any]) -> dict[str, float]:
    """The finite-or-not numeric entries of a flat dict (bools and None left out)."""
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class Tracking:
    """The trackers of one run. Empty when `report_to` is empty, so callers never branch on it."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        if trackers:  # a run that dies with an exception still closes its tracker runs, marked failed
            atexit.register(self._abandon)

    def _abandon(self) -> None:
        if self.trackers:
            self.finish(failed=True)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = numbers(metrics)
        for t in self.trackers:
            t.log(values, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        values = numbers(metrics)
        for t in self.trackers:
            t.summary(values)

    def text(self, name: str, text: str) -> None:
        for t in self.trackers:
            t.text(name, text)

    def file(self, path: Path) -> None:
        for t in self.trackers:
            t.file(path)

    def finish(self, failed: bool = False) -> None:
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.finish(failed)
        atexit.unregister(self._abandon)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(failed=exc_type is not None)


def open_tracking(cfg: TrackingConfig, kind: str, run_dir: Path, config: dict[str, Any],
                  default_name: str | None = None, resume_step: int | None = None) -> Tracking:
    """Start a run in every chosen tracker; a missing library stops here, before any work, with the
    package to install. The run is named after `run_dir` unless `cfg.run_name` says otherwise."""
    if not cfg.report_to:
        return Tracking([])
    project = cfg.project or DEFAULT_PROJECT
    info = RunInfo(kind=kind, name=cfg.run_name or default_name or Path(run_dir).resolve().name,
                   project=project, config=config,
                   tensorboard_dir=Path(cfg.tensorboard_dir) if cfg.tensorboard_dir else Path(run_dir) / "tensorboard",
                   tags=["dataforge", kind], resume_step=resume_step)
    started: list[Tracker] = []
    try:
        for name in cfg.report_to:
            try:
                tracker = tracker_class(name)(info, explicit_project=cfg.project is not None)
            except ImportError as exc:
                raise TrackerUnavailable(
                    f"report_to: {name} needs the '{pip_package(name)}' package ({exc}); install it with "
                    f"pip install {pip_package(name)}, or pip install 'dataforge[track]'") from None
            started.append(tracker)
    except BaseException:
        Tracking(started).finish(failed=True)
        raise
    return Tracking(started)


def env_project(var: str, info: RunInfo, explicit: bool) -> str:
    """An explicit `project` wins; otherwise the library's own environment variable, then 'dataforge'."""
    return info.project if explicit else os.environ.get(var) or info.project

"""One progress display for multi-step jobs: a live spinner and bar per step, and a final line per
step saying what it did and whether it was reused from the cache."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class _Step:
    def __init__(self, owner: StepProgress, name: str, total: float | None):
        self.owner, self.name = owner, name
        self.task = owner._progress.add_task(name, total=total) if owner.enabled else None
        self.t0 = time.perf_counter()
        self.summary: str | None = None

    def advance(self, n: float = 1) -> None:
        if self.task is not None:
            self.owner._progress.advance(self.task, n)

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        if self.task is not None:
            self.owner._progress.update(self.task, total=total, description=description or self.name)

    def done(self, *, reused: bool = False, detail: str = "") -> None:
        tag = "[cyan]reused[/]" if reused else "[green]done[/]"
        self.summary = f"{tag} {self.name:<18} {detail}"


class StepProgress:
    """`with progress.step("dedupe") as s: ...; s.done(detail=...)` prints one line per step."""

    def __init__(self, title: str, enabled: bool = True, console: Console | None = None):
        self.title, self.enabled = title, enabled
        self.seconds: dict[str, float] = {}  # wall time of every finished step, for manifests and benchmarks
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console, transient=True, disable=not enabled,
        )

    def __enter__(self) -> StepProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None) -> Iterator[_Step]:
        s = _Step(self, name, total)
        yield s
        seconds = time.perf_counter() - s.t0
        self.seconds[name] = round(seconds, 3)
        if s.task is not None:
            self._progress.remove_task(s.task)
        if self.enabled:
            self.console.print(f"  {s.summary or f'[green]done[/] {name}'} [dim]{seconds:.1f}s[/]", highlight=False)

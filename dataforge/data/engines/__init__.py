"""Build engines: the same stage list run in memory (`local`), in bounded chunks (`stream`) or on a
Ray cluster (`ray`). Each engine is a function `(cfg, *, overwrite, base_dir, show_progress,
**options) -> BuildResult`, imported only when chosen, so an engine's dependencies (Ray) are needed
only by those who use it."""

from __future__ import annotations

import importlib
from collections.abc import Callable

ENGINES: dict[str, str] = {
    "local": "dataforge.data.pipeline:run_build",
    "stream": "dataforge.data.engines.stream:run_build_stream",
    "ray": "dataforge.data.engines.ray_engine:run_build_ray",
}
ENGINE_NAMES = tuple(ENGINES)


def get_engine(name: str) -> Callable:
    """The build function of engine `name` (see ENGINES)."""
    if name not in ENGINES:
        from dataforge.errors import ConfigError

        raise ConfigError([f"engine: unknown engine '{name}' (choose from {', '.join(ENGINE_NAMES)})"])
    module, _, attr = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)

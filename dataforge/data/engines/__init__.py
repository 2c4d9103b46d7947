"""Build engines: the same stages and the same output, run in memory, streamed, or on a Ray cluster.

Each engine is a function `(cfg, *, overwrite=False, base_dir=None, show_progress=True, **options)
-> BuildResult`, named here by its module path and imported only when chosen, so Ray is imported
only by the ray engine. `dataforge build --engine` picks one; `auto` picks by input size
(`choose_engine`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

ENGINES: dict[str, str] = {
    "local": "dataforge.data.pipeline:run_build",
    "stream": "dataforge.data.engines.stream:run_build_stream",
    "ray": "dataforge.data.engines.ray_engine:run_build_ray",
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)


def get_engine(name: str) -> Callable:
    """The build function of engine `name`; an unknown name is a ConfigError listing the known ones."""
    from dataforge.errors import ConfigError

    if name not in ENGINES:
        raise ConfigError(f"--engine: unknown engine '{name}'; choose one of auto, {', '.join(ENGINE_NAMES)}")
    module, _, attr = ENGINES[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"--engine {name}: cannot import {module} ({exc}); "
                          f"install its extra, e.g. pip install -e \".[{name}]\"") from None


# `auto` streams when the local inputs hold more than this many bytes. The in-memory engine peaks at
# about 4.6 GiB of RSS per million records (benchmarks/RESULTS.md), about 1 GiB of JSON lines for
# Alpaca-sized records, so 256 MiB of input (~250k records, ~1.2 GiB of RSS) is where streaming starts
# to matter and where its extra passes cost little against the build's own time.
AUTO_STREAM_BYTES = 256 << 20


# Engines that build preference pairs (task: preference); the others build SFT records only.
PREFERENCE_ENGINES = ("local",)


def choose_engine(name: str, input_paths: list[Path], task: str = "sft") -> str:
    """`name`, or for `auto` the stream engine when the local inputs exceed AUTO_STREAM_BYTES, else local.
    Preference builds run on the local engine; asking another for one is a ConfigError."""
    from dataforge.errors import ConfigError

    if task != "sft":
        if name not in ("auto", *PREFERENCE_ENGINES):
            raise ConfigError(f"--engine {name}: {task} builds run on the local engine only "
                              f"(use --engine auto or local)")
        return "local"
    if name != "auto":
        return name
    total = 0
    for path in input_paths:
        p = Path(path)
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return "stream" if total > AUTO_STREAM_BYTES else "local"

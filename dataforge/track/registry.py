"""The tracker registry: one module per backend, one line here. A backend's library is imported only
when a run chooses it, so dataforge works without any of them installed."""

from __future__ import annotations

import difflib
import importlib

# name -> (module defining `Tracker`, the pip package that provides the library)
TRACKERS: dict[str, tuple[str, str]] = {
    "wandb": ("dataforge.track.wandb_backend", "wandb"),
    "mlflow": ("dataforge.track.mlflow_backend", "mlflow-skinny"),
    "tensorboard": ("dataforge.track.tensorboard_backend", "tensorboard"),
}


def check_tracker_name(name: str) -> str:
    """The name if registered; otherwise a ValueError naming the choices (pydantic turns it into a
    ConfigError with the field's path)."""
    if name in TRACKERS:
        return name
    close = difflib.get_close_matches(name, list(TRACKERS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown tracker '{name}'{hint} (choose from {', '.join(TRACKERS)})")


def tracker_class(name: str):
    module, _ = TRACKERS[check_tracker_name(name)]
    return importlib.import_module(module).Tracker


def pip_package(name: str) -> str:
    return TRACKERS[name][1]

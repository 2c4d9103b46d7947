"""`dataforge build --from-llamafactory` / `--from-axolotl`: another tool's dataset description as the
build's inputs (and its few data settings), printed as the dataforge YAML it becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dataforge.config.build import BuildConfig
from dataforge.errors import ConfigError


def translated(llamafactory: Path | None, datasets: str | None, axolotl: Path | None) -> tuple[list[dict] | None, dict, list[str]]:
    """(inputs or None, dotted settings, notes) from whichever migration flag was given."""
    if llamafactory and axolotl:
        raise ConfigError("--from-llamafactory and --from-axolotl: give one of them")
    if datasets and not llamafactory:
        raise ConfigError("--dataset names datasets of a dataset_info.json; give it with --from-llamafactory")
    if llamafactory:
        from dataforge.config.from_llamafactory import translate

        inputs, settings = translate(llamafactory, [n.strip() for n in (datasets or "").split(",") if n.strip()])
        return inputs, settings, []
    if axolotl:
        from dataforge.config.from_axolotl import translate

        return translate(axolotl)
    return None, {}, []


def config_yaml(cfg: BuildConfig) -> str:
    """The whole validated config as YAML, in field order: what a pipeline file for this build holds."""
    data: Any = cfg.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

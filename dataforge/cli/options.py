"""Shared CLI plumbing: `--set key=value` overrides and config-key listings for --help epilogs."""

from __future__ import annotations

import yaml
from pydantic import BaseModel
from rich.markup import escape

from dataforge.config.base import describe_fields, set_dotted
from dataforge.errors import ConfigError


def parse_sets(pairs: list[str] | None) -> dict:
    """`a.b=3` -> {"a.b": 3}; values are parsed as YAML scalars/lists so types survive."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. dedupe.near.threshold=0.85")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def apply_sets(data: dict, sets: dict) -> dict:
    for key, value in sets.items():
        set_dotted(data, key, value)
    return data


def config_epilog(model: type[BaseModel], title: str = "Config keys (YAML, or --set KEY=VALUE)") -> str:
    """Every config field with its type, default and description; generated from the pydantic model."""
    lines = [f"[bold]{title}[/bold]"]
    for path, tname, desc in describe_fields(model):
        lines.append(f"[cyan]{path}[/cyan] ({escape(tname)}): {escape(desc)}")
    return "\n\n".join(lines)


def parse_mix(text: str) -> dict[str, float]:
    """`domain=0.8,general=0.2` -> {"domain": 0.8, "general": 0.2}."""
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--mix {text!r}: expected NAME=SHARE pairs, e.g. domain=0.8,general=0.2")
    return out

"""Pydantic is the single source of truth for YAML, CLI flags and docs.

Every config section is a `StrictModel`: unknown keys are errors, and every field carries a
description that feeds `--help`. Validation reports every problem at once, each with its dotted
path (`dedupe.near.threshold: must be between 0 and 1`).
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dataforge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def _field_bounds(model: type[BaseModel] | None, loc: tuple) -> tuple[Any, Any]:
    """(lower, upper) bounds declared on the field at `loc`, so a range error names both ends."""
    field = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None, None
        field = model.model_fields[part]
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    lo = hi = None
    for m in getattr(field, "metadata", []):
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        lo = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
        hi = getattr(m, "lt", None) if getattr(m, "lt", None) is not None else hi
    return lo, hi


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _describe(err: dict, model: type[BaseModel] | None = None) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required, but missing"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        lo, hi = _field_bounds(model, err["loc"])
        lo = lo if lo is not None else ctx.get("ge", ctx.get("gt"))
        hi = hi if hi is not None else ctx.get("le", ctx.get("lt"))
        if lo is not None and hi is not None:
            return f"must be between {_num(lo)} and {_num(hi)}"
        op = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
        return f"must be {op} {_num(lo if lo is not None else hi)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and kind.endswith("_type"):
        msg += f" (got {type(err['input']).__name__} {err['input']!r})"[:200]
    return msg


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Turn pydantic's errors into `path: message` lines, one per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        # A whole-model check names its own fields' paths in its message.
        lines.append(f"{loc}: {_describe(err, model)}" if loc else _describe(err, model))
    return lines


def validate_config(model: type[M], data: Any, where: str | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model), where) from None


def read_yaml(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with open(p, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", str(p)) from None
    return {} if data is None else data


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A config file's top level: every config in the project is a mapping of keys."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", str(path))
    return data


def load_config(model: type[M], path: str | os.PathLike, overrides: dict | None = None) -> M:
    """Read YAML, apply dotted-key overrides (from CLI flags), validate. Relative paths in the YAML
    stay relative to the current directory, unless a model resolves them against `_config_dir`."""
    data = read_yaml_mapping(path)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate_config(model, data, str(path))


def set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _type_name(ann: Any) -> str:
    if isinstance(ann, type) and issubclass(ann, Enum):
        return "|".join(str(m.value) for m in ann)
    if get_origin(ann) is Literal:
        return "|".join(str(a) for a in get_args(ann))
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def describe_fields(model: type[BaseModel], prefix: str = "", instance: BaseModel | None = None) -> list[tuple[str, str, str]]:
    """(dotted path, type, description with default) for every field, recursively; feeds docs and --help.

    Nested defaults come from the parent's default instance, so `clean.input.min_chars` shows 0 even
    though `LengthBounds` alone defaults to 1."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        has_default = not field.is_required()
        value = getattr(instance, name) if instance is not None else (
            field.get_default(call_default_factory=True) if has_default else None)
        if sub is not None:
            rows.extend(describe_fields(sub, path + ".", value if isinstance(value, BaseModel) else None))
            continue
        tname = _type_name(ann)
        value = value.value if isinstance(value, Enum) else value
        default = f" (default: {value!r})" if has_default or instance is not None else ""
        rows.append((path, tname, (field.description or "") + default))
    return rows

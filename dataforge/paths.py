"""Where the project's data folders live, both in a source checkout and in an installed wheel."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
TINY_MODEL_DIR = ASSETS_DIR / "tiny-llama"
DEMO_DATA_DIR = ASSETS_DIR / "demo"
# `name` or `owner/name`: the shape of a Hugging Face hub id (models and datasets alike).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def shipped_dir(name: str) -> Path:
    """`templates`, `evals` or `pipelines`: the repo folder in a checkout, the copy inside a wheel otherwise."""
    repo = PACKAGE_DIR.parent / name
    if repo.is_dir():
        return repo
    return PACKAGE_DIR / "_shipped" / name


def templates_dir() -> Path:
    return shipped_dir("templates")


def evals_dir() -> Path:
    return shipped_dir("evals")


def pipelines_dir() -> Path:
    return shipped_dir("pipelines")


def resolve_data_path(path: str, base_dir: Path | None) -> str:
    """`demo:NAME` is a bundled demo file; other relative paths resolve against the YAML's folder
    first, then the working directory. Anything else (a hub id) passes through unchanged."""
    if path.startswith("demo:"):
        return str(DEMO_DATA_DIR / path[len("demo:"):])
    if not Path(path).is_absolute() and base_dir is not None and (base_dir / path).exists():
        return str((base_dir / path).resolve())
    return path


def is_hub_id(name: str) -> bool:
    """The one rule for "hub id or local path" (inputs, references, eval sets, models, tokenizers).

    A name is a hub id when no local file or folder has that name and it has the shape of one
    (`name` or `owner/name`, no leading `.`, `/` or `~`, at most one slash). Anything else is a
    local path, and a missing local path is the user's error, never a silent hub download."""
    return not Path(name).expanduser().exists() and bool(_HUB_ID.match(name))

"""Where the project's data folders live, both in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
TINY_MODEL_DIR = ASSETS_DIR / "tiny-llama"
DEMO_DATA_DIR = ASSETS_DIR / "demo"


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

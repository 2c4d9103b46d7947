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

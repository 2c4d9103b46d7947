"""Every YAML the project ships (pipelines, suites, tasks, templates), found recursively, validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataforge.config.base import load_config
from dataforge.config.build import BuildConfig
from dataforge.data.templates import load_template
from dataforge.eval.tasks import load_suite, load_task
from dataforge.paths import evals_dir, pipelines_dir, templates_dir
from dataforge.selfinstruct.config import SelfInstructConfig
from dataforge.train.config import load_train_config

ROOTS = (pipelines_dir(), evals_dir(), templates_dir())
ALL = sorted(p for root in ROOTS for p in root.rglob("*.y*ml") if "metrics" not in p.parts)


def _kind(path: Path) -> str:
    if path.is_relative_to(templates_dir()):
        return "template"
    if path.is_relative_to(pipelines_dir() / "accelerate"):
        return "accelerate"
    if path.is_relative_to(pipelines_dir() / "migrate"):
        return "migrate"   # other tools' configs, read by `dataforge build --from-axolotl`
    if path.is_relative_to(pipelines_dir()):
        return path.name.split("_")[0].replace(".yaml", "")
    return "task" if "tasks" in path.relative_to(evals_dir()).parts else "suite"


def test_every_shipped_yaml_has_a_known_kind():
    kinds = {p.name: _kind(p) for p in ALL}
    assert set(kinds.values()) <= {"template", "build", "train", "self", "task", "suite", "accelerate",
                                    "migrate"}, kinds
    assert len(ALL) >= 15


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_yaml_validates(path: Path):
    kind = _kind(path)
    if kind == "template":
        assert load_template(str(path)).name == path.stem
    elif kind == "build":
        load_config(BuildConfig, path)
    elif kind == "train":
        load_train_config(path)
    elif kind == "self":
        load_config(SelfInstructConfig, path)
    elif kind == "accelerate":
        from accelerate.commands.config.config_args import load_config_from_file

        assert load_config_from_file(str(path)).distributed_type.value in ("FSDP", "DEEPSPEED", "MULTI_GPU")
    elif kind == "migrate":
        from dataforge.config.from_axolotl import translate

        inputs, _, _ = translate(path)
        assert all(Path(i["path"]).is_file() for i in inputs)
    elif kind == "suite":
        suite = load_suite(path)
        assert suite.tasks
    else:
        load_task(path, variables={"build": "runs/build_alpaca"})  # a suite or --var supplies it

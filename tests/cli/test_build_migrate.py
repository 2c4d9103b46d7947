"""The README's promise: the demo data described as a LLaMA-Factory dataset_info.json, or as an axolotl
datasets: block, builds the same dataset (same fingerprint) as the native pipeline YAML; and
`inspect` shows that every assistant turn of its multi-turn records is trained."""

from __future__ import annotations

import io

import polars as pl
import pytest
from rich.console import Console

from dataforge.cli.build import build_config_from_cli
from dataforge.cli.inspect import inspect_run
from dataforge.cli.migrate import translated
from dataforge.data.pipeline import run_build
from dataforge.paths import pipelines_dir


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("migrate")
    migrate = pipelines_dir() / "migrate"
    results = {}
    for name, migrated in (("native", (None, None, None)),
                           ("llamafactory", (migrate / "dataset_info.json", "domain,general", None)),
                           ("axolotl", (None, None, migrate / "axolotl.yml"))):
        inputs, settings, _ = translated(*migrated)
        cfg, base_dir = build_config_from_cli(pipelines_dir() / "build_alpaca.yaml", [], {"output": str(out / name)},
                                              (inputs, settings))
        results[name] = run_build(cfg, base_dir=base_dir, show_progress=False)
    return results


def test_llamafactory_and_axolotl_descriptions_build_the_native_fingerprint(builds):
    fingerprints = {name: result.manifest["fingerprint"] for name, result in builds.items()}
    assert fingerprints["llamafactory"] == fingerprints["native"] == fingerprints["axolotl"], fingerprints


def test_inspect_shows_every_assistant_turn_trained(builds):
    run = builds["native"].run_dir
    buffer = io.StringIO()
    inspect_run(run, Console(file=buffer, width=200, no_color=True), samples=1000, split="test", plain=True)
    text = buffer.getvalue()
    assert "trained turns: every assistant turn, each with its turn end (tokenize.train_turns: all)" in text
    test = pl.read_parquet(run / "splits" / "test.parquet")
    two_answers = test.filter(pl.col("history").list.eval(pl.element().struct.field("role") == "assistant").list.any())
    assert two_answers.height > 0
    assert text.count("2 trained spans) ---") == two_answers.height
    assert text.count("1 trained span) ---") == test.height - two_answers.height


def test_print_config_gives_the_yaml_the_translation_becomes():
    import subprocess
    import sys

    import yaml

    from dataforge.config.build import BuildConfig

    proc = subprocess.run([sys.executable, "-m", "dataforge", "build", "--from-axolotl",
                           str(pipelines_dir() / "migrate" / "axolotl.yml"), "--print-config"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cfg = BuildConfig.model_validate(yaml.safe_load(proc.stdout))
    assert [(i.source, i.format.value) for i in cfg.inputs] == [("domain", "alpaca"), ("general", "sharegpt")]
    assert cfg.inputs[1].roles == {"human": "user", "gpt": "assistant", "system": "system"}
    assert (cfg.tokenize.max_length, cfg.split.val, cfg.tokenize.train_turns.value) == (512, 0.1, "all")
    assert "left to `dataforge train`: base_model, learning_rate, lora_r" in " ".join(proc.stderr.split())

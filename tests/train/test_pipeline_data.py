"""Training from a pipeline YAML: the build runs first (through its cache) and the train config's mix wins."""

from __future__ import annotations

import json

import yaml
from train_helpers import demo_pipeline

from dataforge.train.config import load_train_config
from dataforge.train.loop import train


def test_a_pipeline_yaml_is_built_with_the_train_mix_and_reused(tmp_path, tiny_model_ready):
    demo_pipeline(tmp_path)
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "data": {"path": "pipe.yaml", "mix": {"domain": 1.0, "general": 0.0}},  # relative to this YAML
        "train": {"max_steps": 2, "batch_size": 4}, "eval": {"at_start": False},
    }))
    cfg = load_train_config(train_yaml, {"output": str(tmp_path / "t1")})
    manifest = train(cfg, show_progress=False).manifest

    run_dir = tmp_path / "runs" / manifest["data"]["run_dir"].rsplit("/", 1)[-1]
    assert run_dir.name.startswith("build-mix-") and run_dir.parent == tmp_path / "runs"
    build = json.loads((run_dir / "manifest.json").read_text())
    assert build["config"]["mix"]["proportions"] == {"domain": 1.0, "general": 0.0}
    assert manifest["data"]["fingerprint"] == build["fingerprint"]
    assert manifest["data"]["train_by_source"]["general"] == 0 < manifest["data"]["train_by_source"]["domain"]
    # general text is still in val, so forgetting is measured while training on domain only
    assert {"final_eval_domain_loss", "final_eval_general_loss"} <= set(manifest["stats"])
    assert not (tmp_path / "runs" / "build").exists()  # the pipeline's own run folder is left alone

    stamp = (run_dir / "manifest.json").stat().st_mtime_ns
    cfg2 = load_train_config(train_yaml, {"output": str(tmp_path / "t2")})
    again = train(cfg2, show_progress=False).manifest
    assert again["data"]["fingerprint"] == manifest["data"]["fingerprint"]
    assert (run_dir / "manifest.json").stat().st_mtime_ns == stamp  # reused whole, not rebuilt

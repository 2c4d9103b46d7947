"""What a user sees when a training config, its data or the run itself goes wrong: one message, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from train_helpers import run_cli, write_config

from dataforge.config.base import validate_config
from dataforge.errors import ConfigError, StateError
from dataforge.train.config import TrainConfig


def _problems(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(TrainConfig, data)
    return str(exc.value)


def test_every_bad_field_is_reported_with_its_path():
    msg = _problems({"data": {"path": "x", "mix": {"domain": -1}}, "train": {"warmup_ratio": 2, "batch_size": 0},
                     "lora": {"rank": 8}, "eval": {"every_steps": 0}})
    assert "train.warmup_ratio: must be between 0 and 1" in msg
    assert "train.batch_size: must be >= 1" in msg
    assert "lora.rank: unknown key" in msg
    assert "eval.every_steps: must be >= 1" in msg
    assert "data.mix: " in msg and "domain" in msg


def test_unknown_method_and_peft_option_suggest_the_nearest_name():
    assert "did you mean 'lora'" in _problems({"data": {"path": "x"}, "method": "lorra"})
    msg = _problems({"data": {"path": "x"}, "method": "prompt_tuning", "peft_options": {"num_virtual_token": 4}})
    assert "peft_options: PromptTuningConfig has no option 'num_virtual_token' (did you mean 'num_virtual_tokens'?)" in msg


def test_any_peft_method_name_is_accepted():
    for method in ("ia3", "prompt_tuning", "prefix_tuning", "adalora", "loha", "LoKr"):
        assert validate_config(TrainConfig, {"data": {"path": "x"}, "method": method}).method == method.lower()


def test_cli_reports_a_bad_yaml_field_without_traceback(tmp_path, build_run):
    cfg = write_config(tmp_path / "c.yaml", build_run, tmp_path / "out", train={"learning_rate": -1})
    res = run_cli("train", str(cfg))
    assert res.returncode == 2
    assert "train.learning_rate: must be > 0" in res.stderr and "Traceback" not in res.stderr


def test_a_nan_loss_stops_the_run_with_a_clear_message(tmp_path, build_run):
    """Base weights with a NaN (as a corrupt download would have) make the first loss NaN."""
    from safetensors.torch import load_file, save_file

    from dataforge.paths import TINY_MODEL_DIR

    model_dir = tmp_path / "broken-model"
    shutil.copytree(TINY_MODEL_DIR, model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    norm = next(k for k in weights if k.endswith("input_layernorm.weight"))
    weights[norm][0] = float("nan")
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})

    cfg = write_config(tmp_path / "c.yaml", build_run, tmp_path / "out", model=str(model_dir))
    res = run_cli("train", str(cfg), "-q")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "the training loss is nan at step 1" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "adapter").exists()


def test_refuses_to_train_into_a_folder_holding_another_run(tmp_path, build_run):
    from dataforge.train.loop import _check_output

    out = tmp_path / "out"
    out.mkdir()
    (out / "train_log.jsonl").write_text("")
    with pytest.raises(StateError, match="--resume"):
        _check_output(out, resume=False, overwrite=False)
    assert _check_output(out, resume=False, overwrite=True) is None


def test_mixing_needs_the_pipeline_yaml_not_a_built_folder(build_run):
    from dataforge.train.config import DataSection
    from dataforge.train.data import resolve_build

    with pytest.raises(ConfigError, match="data.mix: .* pipeline YAML"):
        resolve_build(DataSection(path=str(build_run), mix={"domain": 0.8, "general": 0.2}))


def test_every_shipped_train_yaml_validates_and_finds_its_pipeline():
    from dataforge.paths import pipelines_dir
    from dataforge.train.config import load_train_config

    shipped = sorted(pipelines_dir().rglob("train_*.yaml"))
    assert len(shipped) >= 3
    for path in shipped:
        cfg = load_train_config(path)
        assert Path(cfg.data.path).is_absolute() and Path(cfg.data.path).exists(), (path, cfg.data.path)

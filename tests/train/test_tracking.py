"""`report_to`: a LoRA run on the tiny model logs to W&B (offline), MLflow (a file store) and
TensorBoard at once, and each holds the run's own loss curve, learning rate, eval losses, config and
manifest, read back with the library's own reader."""

from __future__ import annotations

import json
import math

import pytest
from track.readback import mlflow_run, tensorboard_scalars, tensorboard_texts, wandb_run
from train_helpers import read_log, read_manifest

from dataforge.errors import ConfigError
from dataforge.train.config import load_train_config


def _config(build_run, out, **extra):
    return load_train_config(None, {
        "model": "tiny", "method": "lora", "seed": 3, "output": str(out), "data.path": str(build_run),
        "lora.r": 4, "train.max_steps": 4, "train.batch_size": 4, "train.learning_rate": 2e-3,
        "train.warmup_steps": 2, "eval.every_steps": 2, "eval.batch_size": 16, "checkpoint.every_steps": 100,
        **extra})


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    (tmp_path / "wandb-home").mkdir()
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this opt-in
    yield tmp_path, uri
    import wandb

    wandb.teardown()  # wandb reads WANDB_DIR once per process; the next test sets another


def test_train_reports_loss_lr_evals_config_and_manifest_to_every_tracker(build_run, tracker_env):
    from dataforge.train.loop import train

    tmp, uri = tracker_env
    out = tmp / "run-tracked"
    train(_config(build_run, out, report_to="wandb,mlflow,tensorboard", **{"tracking.project": "df-test"}),
          show_progress=False)
    rows, manifest = read_log(out), read_manifest(out)
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    evals = {(r["step"], k): v for r in rows for k, v in r.items() if k.startswith("eval_")}
    assert len(losses) == 4 and len({k for _, k in evals}) >= 2 and {s for s, _ in evals} == {0, 2, 4}

    wb = wandb_run(tmp / "wandb-home", "run-tracked")
    assert wb["run"].project == "df-test"
    assert {s: h["loss"] for s, h in wb["history"].items() if "loss" in h} == losses
    assert {s: h["lr"] for s, h in wb["history"].items() if "lr" in h} == lrs
    assert {(s, k): v for s, h in wb["history"].items() for k, v in h.items() if k.startswith("eval_")} == evals
    assert wb["config"]["lora"]["r"] == 4 and wb["config"]["train"]["max_steps"] == 4
    assert wb["summary"]["final_loss"] == manifest["stats"]["final_loss"]
    assert "manifest.json" in wb["files"]
    assert json.loads((wb["dir"] / "files" / "manifest.json").read_text()) == manifest

    client, run = mlflow_run(uri, "run-tracked")
    assert client.get_experiment(run.info.experiment_id).name == "df-test"
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")} == losses
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")} == pytest.approx(lrs)
    for (step, key), value in evals.items():
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history[step] == pytest.approx(value)
    assert run.data.params["lora.r"] == "4" and run.data.params["train.learning_rate"] == "0.002"
    assert run.info.status == "FINISHED"
    local = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp / "dl"))
    assert json.loads(open(local).read()) == manifest

    tb = tensorboard_scalars(out / "tensorboard" / "train-run-tracked")
    assert tb["loss"] == pytest.approx(losses, rel=1e-6)  # event files store float32
    assert tb["lr"] == pytest.approx(lrs, rel=1e-6)
    assert json.loads(tensorboard_texts(out / "tensorboard" / "train-run-tracked")["config"].replace("\n    ", "\n"))[
        "lora"]["r"] == 4
    assert all(math.isfinite(v) for v in losses.values())


def test_unknown_tracker_is_a_config_error_naming_the_field(build_run, tmp_path):
    with pytest.raises(ConfigError, match=r"report_to.*unknown tracker 'wandbb'; did you mean 'wandb'"):
        _config(build_run, tmp_path / "x", report_to=["wandbb"])

"""`report_to` for eval and compare: each tracker holds the numbers of the results folder and of the
comparison (values with their CIs), read back with the library's own reader; a tracker whose library
is missing is one message with the package to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from track.readback import mlflow_run, tensorboard_scalars, tensorboard_texts, wandb_run

from dataforge.eval.metrics import GenerationScoring
from dataforge.eval.predictions import score_predictions

FIXTURES = Path(__file__).parents[1] / "eval" / "fixtures"
ALL = ["wandb", "mlflow", "tensorboard"]


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    (tmp_path / "wandb-home").mkdir()
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb-home"), "WANDB_SILENT": "true",
           "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path, env
    import wandb

    wandb.teardown()  # wandb reads WANDB_DIR once per process; the next test sets another


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("scored")
    base = score_predictions(FIXTURES / "base_predictions.jsonl", None, GenerationScoring(), out=root / "base",
                             n_boot=200)
    tuned = score_predictions(FIXTURES / "tuned_predictions.csv",
                              {"prompt": "question", "prediction": "answer", "reference": "gold"},
                              GenerationScoring(), out=root / "tuned", n_boot=200)
    return base, tuned


def _expected_eval(metrics: dict) -> dict[str, float]:
    """metrics.json's numbers under the documented key names, computed here independently."""
    out = {}
    for task, entry in metrics.items():
        out[f"{task}/n"] = entry["n"]
        for name, m in entry["metrics"].items():
            out[f"{task}/{name}"] = m["value"]
            out[f"{task}/{name}.ci_low"], out[f"{task}/{name}.ci_high"] = m["ci_low"], m["ci_high"]
    return out


def _check_all_trackers(tmp: Path, uri: str, run_name: str, tb_dir: Path, expected: dict[str, float]) -> None:
    wb = wandb_run(tmp / "wandb-home", run_name)
    client, run = mlflow_run(uri, run_name)
    tb = tensorboard_scalars(tb_dir)
    for key, value in expected.items():
        assert wb["summary"][key] == pytest.approx(value, rel=1e-12), key
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-12), key
        assert list(tb[key].values())[-1] == pytest.approx(value, rel=1e-6), key
    assert run.info.status == "FINISHED"


def test_eval_reports_each_metric_with_its_ci_to_every_tracker(tracker_env):
    from dataforge.eval.config import EvalConfig
    from dataforge.eval.evaluate import evaluate

    tmp, env = tracker_env
    out = tmp / "res-tiny"
    evaluate(EvalConfig(suite="leaderboard", model="tiny", out=out, tasks=["mmlu"], history=False,
                        report_to="wandb,mlflow,tensorboard", tracking={"project": "df-eval"},
                        options={"limit": 4, "n_boot": 100, "progress": False, "cache_dir": None}))
    metrics = json.loads((out / "metrics.json").read_text())
    expected = _expected_eval(metrics)
    assert "mmlu/acc.ci_low" in expected and expected["mmlu/n"] == 4
    _check_all_trackers(tmp, env["MLFLOW_TRACKING_URI"], "res-tiny", out / "tensorboard" / "eval-res-tiny", expected)
    assert "| mmlu | acc" in tensorboard_texts(out / "tensorboard" / "eval-res-tiny")["results.md"]
    client, run = mlflow_run(env["MLFLOW_TRACKING_URI"], "res-tiny")
    assert client.get_experiment(run.info.experiment_id).name == "df-eval"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"metrics.json", "manifest.json", "results.md"}


def test_compare_reports_deltas_with_cis_to_every_tracker(tracker_env, scored):
    from typer.testing import CliRunner

    from dataforge.cli.main import app

    tmp, env = tracker_env
    base, tuned = scored
    result = CliRunner().invoke(app, ["compare", str(base), str(tuned), "--n-boot", "200", "--json",
                                      str(tmp / "cmp.json"), "--report-to", "wandb,mlflow", "--report-to",
                                      "tensorboard"])
    assert result.exit_code in (0, 1), result.output
    comp = json.loads((tmp / "cmp.json").read_text())
    expected = {}
    for task, t in comp["tasks"].items():
        for name, d in t["metrics"].items():
            for key in ("delta", "ci_low", "ci_high", "p_value", "base", "tuned"):
                expected[f"{task}/{name}.{key}"] = d[key]
    assert "predictions/rougeL.delta" in expected
    _check_all_trackers(tmp, env["MLFLOW_TRACKING_URI"], "tuned-vs-base", tuned / "tensorboard" / "compare-tuned-vs-base",
                        expected)


def test_a_tracker_whose_library_is_missing_is_one_message_with_the_install_hint(scored, tmp_path):
    """`sys.modules[name] = None` is how Python itself makes `import name` fail as for a package that
    is not installed; the rest of the command is the real one."""
    base, tuned = scored
    code = ("import sys; sys.modules['wandb'] = None; from dataforge.cli.main import main; "
            f"sys.argv = ['dataforge', 'compare', {str(base)!r}, {str(tuned)!r}, '--n-boot', '100', "
            "'--report-to', 'wandb']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "report_to: wandb needs the 'wandb' package" in proc.stderr and "pip install wandb" in proc.stderr


def test_an_unknown_tracker_on_the_command_line_is_a_usage_error(scored):
    from typer.testing import CliRunner

    from dataforge.cli.main import app
    from dataforge.errors import ConfigError

    base, tuned = scored
    result = CliRunner().invoke(app, ["compare", str(base), str(tuned), "--report-to", "mlfow"])
    assert isinstance(result.exception, ConfigError)
    assert "unknown tracker 'mlfow'; did you mean 'mlflow'?" in str(result.exception)

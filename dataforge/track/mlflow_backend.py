"""MLflow, through `MlflowClient` (no global active run, so eval's several results folders are several
runs). The tracking server is the library's own setting: MLFLOW_TRACKING_URI (a `file://` folder,
a database or a server); MLFLOW_EXPERIMENT_NAME names the experiment unless `tracking.project` does."""

from __future__ import annotations

import re
import time
from pathlib import Path

from dataforge.track.base import RunInfo, TrackerUnavailable, env_project, flatten
from dataforge.track.base import Tracker as BaseTracker

_BAD_KEY = re.compile(r"[^\w\-. /:]")
MAX_PARAM_VALUE = 6000
BATCH = 100


def _key(name: str) -> str:
    """MLflow accepts letters, digits, `_-. /:` in names; a task name may hold anything."""
    return _BAD_KEY.sub("_", name)[:250]


class Tracker(BaseTracker):
    name = "mlflow"

    def __init__(self, info: RunInfo, explicit_project: bool):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        experiment = env_project("MLFLOW_EXPERIMENT_NAME", info, explicit_project)
        try:
            self.client = MlflowClient()
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=info.name,
                                                 tags={"dataforge.kind": info.kind}).info.run_id
        except Exception as exc:  # an unreachable server, an unusable store: one clear message
            import mlflow

            raise TrackerUnavailable(f"report_to: mlflow could not start a run at {mlflow.get_tracking_uri()}: "
                                     f"{exc}") from None
        params = [Param(_key(k), str(v)[:MAX_PARAM_VALUE]) for k, v in flatten(info.config).items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + BATCH])
        self.last_step = 0

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(_key(k), v, now, step) for k, v in metrics.items()]
        for i in range(0, len(rows), BATCH):
            self.client.log_batch(self.run_id, metrics=rows[i:i + BATCH])
        self.last_step = max(self.last_step, step)

    def summary(self, metrics: dict[str, float]) -> None:
        self.log(metrics, self.last_step)

    def text(self, name: str, text: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def file(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

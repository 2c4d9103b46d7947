"""Weights & Biases. Honours the library's own settings: WANDB_MODE=offline writes the run under
WANDB_DIR for a later `wandb sync`; WANDB_PROJECT names the project unless `tracking.project` does."""

from __future__ import annotations

from pathlib import Path

from dataforge.track.base import RunInfo, TrackerUnavailable, env_project
from dataforge.track.base import Tracker as BaseTracker


class Tracker(BaseTracker):
    name = "wandb"

    def __init__(self, info: RunInfo, explicit_project: bool):
        import wandb

        try:
            self.run = wandb.init(project=env_project("WANDB_PROJECT", info, explicit_project), name=info.name,
                                  job_type=info.kind, tags=info.tags, config=info.config, reinit="create_new")
        except Exception as exc:  # wandb raises its own errors (no API key, no network): one clear message
            raise TrackerUnavailable(f"report_to: wandb could not start a run: {exc}. Run `wandb login`, or set "
                                     "WANDB_MODE=offline to log locally and `wandb sync` later") from None

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def text(self, name: str, text: str) -> None:
        path = Path(self.run.dir) / name
        path.write_text(text, encoding="utf-8")
        self.run.save(str(path), base_path=self.run.dir, policy="now")

    def file(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)

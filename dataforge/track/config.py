"""Where runs are reported: the `report_to` list and the few settings trackers share.

Train and eval configs carry `report_to` and a `tracking` section; compare takes the same as flags.
`TrackingConfig` joins the two for `open_tracking`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from dataforge.config.base import StrictModel


def _split_commas(v):
    """`--report-to wandb,mlflow`, repeated flags and a YAML list mean the same."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        v = [part.strip().lower() for item in v for part in str(item).split(",") if part.strip()]
    return v


def _known(v: list[str]) -> list[str]:
    from dataforge.track.registry import check_tracker_name

    for name in v:
        check_tracker_name(name)
    return list(dict.fromkeys(v))


ReportTo = Annotated[list[str], BeforeValidator(_split_commas), AfterValidator(_known)]
REPORT_TO_HELP = ("Experiment trackers to log to: wandb, mlflow, tensorboard (each needs its library: "
                  "pip install 'dataforge[track]'). Empty: none.")


class TrackingSettings(StrictModel):
    project: str | None = Field(
        None, description="W&B project and MLflow experiment; default: WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME "
                          "when set, else 'dataforge'.")
    run_name: str | None = Field(None, description="Run name in the trackers; default: the run folder's name.")
    tensorboard_dir: str | None = Field(
        None, description="Folder for TensorBoard event files; default: tensorboard/ inside the run folder.")


class TrackingConfig(TrackingSettings):
    report_to: ReportTo = Field(default_factory=list, description=REPORT_TO_HELP)

    @classmethod
    def of(cls, report_to: list[str], settings: TrackingSettings) -> TrackingConfig:
        return cls(report_to=report_to, **settings.model_dump())

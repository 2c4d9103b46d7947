"""TensorBoard event files, written by torch's `SummaryWriter` (which needs the tensorboard package)
into `<tensorboard_dir>/<kind>-<run name>`, so `tensorboard --logdir` over a folder of runs shows each.
A resumed train run writes to the same folder; W&B and MLflow start a new run for it, named alike."""

from __future__ import annotations

import json
from pathlib import Path

from dataforge.track.base import RunInfo
from dataforge.track.base import Tracker as BaseTracker

MAX_TEXT_FILE = 1 << 20


def _markdown_code(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it so JSON and YAML keep their shape."""
    return "\n".join("    " + line for line in text.splitlines())


class Tracker(BaseTracker):
    name = "tensorboard"

    def __init__(self, info: RunInfo, explicit_project: bool):
        import tensorboard  # noqa: F401  (torch's writer needs it; fail here with the install hint)
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = info.tensorboard_dir / f"{info.kind}-{info.name}"
        # A resumed run: events after the checkpoint's step, from the interrupted run, are dropped
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=info.resume_step)
        self.writer.add_text("config", _markdown_code(json.dumps(info.config, indent=2, default=str)), 0)
        self.last_step = 0

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.last_step = max(self.last_step, step)

    def summary(self, metrics: dict[str, float]) -> None:
        self.log(metrics, self.last_step)

    def text(self, name: str, text: str) -> None:
        self.writer.add_text(name, text, self.last_step)

    def file(self, path: Path) -> None:
        if path.suffix in (".json", ".jsonl", ".yaml", ".md", ".txt") and path.stat().st_size <= MAX_TEXT_FILE:
            self.writer.add_text(path.name, _markdown_code(path.read_text(encoding="utf-8")), self.last_step)

    def finish(self, failed: bool) -> None:
        self.writer.close()

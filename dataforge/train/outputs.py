"""What a training run leaves behind besides the weights: the log, the loss curve, the manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dataforge.util import atomic

LOG_FILE = "train_log.jsonl"
CURVE_FILE = "loss_curve.png"
MANIFEST_FILE = "manifest.json"


class TrainLog:
    """`train_log.jsonl`: one row per logged step and per eval, appended as the run goes.

    On resume the rows after the checkpoint's step are dropped (those steps are trained again),
    as is a line cut short by a kill, so the log of a resumed run reads like an uninterrupted one.
    """

    def __init__(self, path: Path, resume_step: int | None, enabled: bool,
                 on_add: Callable[[dict], None] | None = None):
        self.path, self.enabled, self.on_add = path, enabled, on_add
        self.rows: list[dict] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run
                if row["step"] <= resume_step:
                    self.rows.append(row)
        if enabled:
            atomic.write_jsonl(path, self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if self.on_add is not None:
            self.on_add(row)

    def last(self, key: str) -> float | None:
        for row in reversed(self.rows):
            if key in row:
                return row[key]
        return None


def plot_loss_curve(rows: list[dict], path: Path, title: str) -> None:
    """Train loss and each eval loss against the step, so forgetting shows as a rising eval curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preference = any("reward_margin" in r or "eval_reward_margin" in r for r in rows)
    if preference:  # a second panel: reward margins and chosen/rejected log-probs, train and eval
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=110)
        _plot_preference(ax2, rows)
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if train:
        ax.plot(*zip(*train, strict=True), label="train", color="0.6", linewidth=1)
    eval_keys = sorted({k for r in rows for k in r if k.startswith("eval_") and k.endswith("_loss")})
    for key in eval_keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        style = "--" if key == "eval_loss" else "-"
        ax.plot(*zip(*pts, strict=True), style, marker="o", markersize=3, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per pair)" if preference else "loss (nats per trained token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _plot_preference(ax, rows: list[dict]) -> None:
    for key, style in (("reward_margin", "-"), ("eval_reward_margin", "--")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, marker="o" if key.startswith("eval") else None, markersize=3, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward margin (chosen - rejected)")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    for key, color in (("logps_chosen", "tab:green"), ("logps_rejected", "tab:red")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            twin.plot(*zip(*pts, strict=True), ":", color=color, linewidth=1, label=key)
    twin.set_ylabel("summed log-prob (train batches)")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)


def peak_memory_bytes(device_type: str) -> int:
    """Peak GPU memory allocated by torch, or the process's peak resident set size on CPU."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)

"""`dataforge eval`: run an eval suite for a model, its adapter, or both, into results folders."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dataforge.errors import ConfigError

PANEL = "Evaluate"


def parse_vars(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var {pair!r}: expected NAME=VALUE, e.g. build=runs/build_alpaca")
        out[name.strip()] = value
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def print_summary(console: Console, suite, run) -> None:
    labels = list(run.summary)
    table = Table(title=f"suite {suite.name}")
    for col in ("task", "tag", "metric", *labels):
        table.add_column(col, justify="right" if col in labels else "left",
                         overflow="fold" if col == "task" else "ellipsis", no_wrap=col != "task")
    for task in suite.tasks:
        first = run.summary[labels[0]].get(task.name, {})
        for i, metric in enumerate(first):
            cells = [_fmt(run.summary[label].get(task.name, {}).get(metric)) for label in labels]
            table.add_row(task.name if i == 0 else "", task.tag.value if i == 0 else "", metric, *cells)
    console.print(table)
    for label, folder in zip(labels, run.folders, strict=True):
        console.print(f"{label} -> {folder}")


def register(app: typer.Typer) -> None:
    @app.command("eval", rich_help_panel=PANEL)
    def eval_cmd(
        suite: str = typer.Argument(..., help="Suite YAML, or the name of a shipped suite (regression, leaderboard)."),
        model: str = typer.Option(..., "--model", "-m", help="Base model: 'tiny', a local folder or a hub id."),
        out: Path = typer.Option(..., "--out", "-o", help="Results folder for the model (with its adapter, if given); with several adapters, one subfolder per adapter."),
        adapter: list[str] = typer.Option([], "--adapter", "-a", help="peft adapter folder to evaluate on top of the model. Repeatable: one load, one results folder per adapter. A quoted glob ('runs/x/checkpoints/*') scores every checkpoint."),
        base_out: Path | None = typer.Option(None, "--base-out", help="Also evaluate the model without the adapter, into this results folder (same load, same prompts)."),
        noise_seed: list[int] = typer.Option([], "--noise-seed", help="Re-run the base with this seed into <base folder>-seed<N> (no cache), for `compare --noise`. Repeatable."),
        var: list[str] = typer.Option([], "--var", help="Suite variable NAME=VALUE for ${NAME} in task data paths, e.g. build=runs/build_alpaca. Repeatable."),
        task: list[str] = typer.Option([], "--task", "-t", help="Run only this task of the suite. Repeatable."),
        limit: int | None = typer.Option(None, min=1, help="Score only the first N samples of each task (for quick trials)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per forward pass."),
        dtype: str = typer.Option("float32", help="Weights dtype: float32, bfloat16, float16 or auto."),
        device: str | None = typer.Option(None, help="Device (default: cuda when available, else cpu)."),
        backend: str = typer.Option("transformers", help="Generation backend for generation tasks: transformers or vllm (loglikelihood tasks run on transformers)."),
        lora_mode: str = typer.Option("auto", "--lora-mode", help="vllm: how adapters are served: merged, multi-lora, or auto (multi-lora on a GPU with 2+ adapters, else merged)."),
        quantize: str = typer.Option("none", "--quantize", help="Evaluate a bitsandbytes 8bit or 4bit copy of the model (and adapter); compare it with the full-precision run."),
        seed: int = typer.Option(1234, help="Seed of generation and of the bootstrap intervals."),
        n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap replicates for the confidence intervals."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Per-sample cache (default $DATAFORGE_HOME/eval-cache); an interrupted eval resumes from it."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the per-sample cache."),
        record: bool = typer.Option(True, "--history/--no-history", help="Record the run(s) in the history store."),
        series: str | None = typer.Option(None, help="History series of successive tunes."),
        history_db: Path | None = typer.Option(None, "--history-db", help="History store."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display, and no progress bars or warnings from transformers or vLLM."),
        report_to: list[str] = typer.Option([], "--report-to", help="Log the results to wandb, mlflow or tensorboard (repeatable, or comma-separated)."),
        project: str | None = typer.Option(None, "--project", help="W&B project / MLflow experiment for --report-to."),
    ) -> None:
        """Evaluate a model on a suite: multiple choice, perplexity and generation tasks.

        Writes one results folder per model; with --adapter and --base-out, the tuned model and its base from one load. Compare them with `dataforge compare BASE TUNED`.
        """
        from dataforge.config.base import validate_config
        from dataforge.eval.config import EvalConfig
        from dataforge.eval.evaluate import evaluate
        from dataforge.eval.runner import default_cache_dir
        from dataforge.util.quiet import quiet_libraries

        if quiet:
            quiet_libraries()

        cfg = validate_config(EvalConfig, {
            "suite": suite, "model": model, "out": out, "adapters": adapter, "base_out": base_out, "noise_seeds": noise_seed,
            "vars": parse_vars(var), "tasks": task, "history": record, "series": series, "history_db": history_db,
            "report_to": report_to, "tracking": {"project": project},
            "options": {"batch_size": batch_size, "dtype": dtype, "device": device, "backend": backend,
                        "lora_mode": lora_mode, "quantize": quantize, "limit": limit, "seed": seed, "n_boot": n_boot,
                        "progress": not quiet, "cache_dir": None if no_cache else (cache_dir or default_cache_dir())},
        }, "dataforge eval")
        loaded, run = evaluate(cfg)
        print_summary(Console(), loaded, run)

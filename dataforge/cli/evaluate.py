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


# lm-eval's --model_args keys that mean the same here, and the eval flag each sets.
MODEL_ARGS = {"pretrained": "model", "peft": "adapter", "dtype": "dtype", "device": "device",
              "batch_size": "batch_size", "load_in_8bit": "quantize", "load_in_4bit": "quantize"}
DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16",
          "auto": "auto"}
LM_EVAL_MODELS = {"hf": "transformers", "huggingface": "transformers", "vllm": "vllm"}


def parse_model_args(text: str) -> dict[str, str]:
    """lm-eval's `--model_args pretrained=X,peft=Y,dtype=Z` as {eval flag: value}; an unknown key or a
    malformed pair is one error naming it and the supported keys."""
    out: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--model_args {pair!r}: expected KEY=VALUE, e.g. pretrained=tiny,dtype=float32")
        if key not in MODEL_ARGS:
            raise ConfigError(f"--model_args: unsupported key {key!r}; supported: {', '.join(MODEL_ARGS)}")
        if key == "dtype":
            if value not in DTYPES:
                raise ConfigError(f"--model_args dtype={value}: use one of {', '.join(DTYPES)}")
            value = DTYPES[value]
        if key in ("load_in_8bit", "load_in_4bit"):
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"--model_args {key}={value}: expected True or False")
            if value.lower() == "false":
                continue
            value = key.removeprefix("load_in_")
        flag = MODEL_ARGS[key]
        if flag in out:
            raise ConfigError(f"--model_args: {key} sets {flag}, which another key already set")
        out[flag] = value
    return out


def lm_eval_aliases(model: str | None, model_args: str | None, backend: str) -> tuple[str, dict[str, str], str]:
    """(model, flags from --model_args, backend). With --model_args, --model may be lm-eval's model type
    (hf, vllm), which picks the backend, as in an lm-eval command line."""
    if model_args is None:
        if model is None:
            raise ConfigError("--model: give the model ('tiny', a folder or a hub id), or lm-eval's "
                              "--model_args pretrained=...")
        return model, {}, backend
    flags = parse_model_args(model_args)
    if model is not None and model in LM_EVAL_MODELS:
        backend = LM_EVAL_MODELS[model]
    elif model is not None and "model" in flags:
        raise ConfigError(f"--model {model} and --model_args pretrained={flags['model']}: give the model once "
                          f"(with --model_args, --model is lm-eval's model type: {', '.join(LM_EVAL_MODELS)})")
    elif model is not None:
        flags["model"] = model
    if "model" not in flags:
        raise ConfigError("--model_args needs pretrained=<model> (or give --model)")
    return flags.pop("model"), flags, backend


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
        model: str | None = typer.Option(None, "--model", "-m", help="Base model: 'tiny', a local folder or a hub id (with --model_args: lm-eval's model type, hf or vllm)."),
        model_args: str | None = typer.Option(None, "--model_args", "--model-args", help="lm-eval style: pretrained=MODEL,peft=ADAPTER,dtype=DTYPE (also device, batch_size, load_in_8bit, load_in_4bit)."),
        tasks_csv: str | None = typer.Option(None, "--tasks", help="lm-eval style: comma-separated tasks of the suite to run (as --task)."),
        num_fewshot: int | None = typer.Option(None, "--num_fewshot", "--num-fewshot", min=0, help="Examples before each multiple-choice question, for every such task (lm-eval's --num_fewshot)."),
        output_format: str = typer.Option("dataforge", "--format", help="dataforge, or lm-eval: also write an lm-eval-style results.json in each results folder."),
        out: Path = typer.Option(..., "--out", "-o", "--output_path", help="Results folder for the model (with its adapter, if given); with several adapters, one subfolder per adapter."),
        adapter: list[str] = typer.Option([], "--adapter", "-a", help="peft adapter folder to evaluate on top of the model. Repeatable: one load, one results folder per adapter. A quoted glob ('runs/x/checkpoints/*') scores every checkpoint."),
        base_out: Path | None = typer.Option(None, "--base-out", help="Also evaluate the model without the adapter, into this results folder (same load, same prompts)."),
        noise_seed: list[int] = typer.Option([], "--noise-seed", help="Re-run the base with this seed into <base folder>-seed<N> (no cache), for `compare --noise`. Repeatable."),
        var: list[str] = typer.Option([], "--var", help="Suite variable NAME=VALUE for ${NAME} in task data paths, e.g. build=runs/build_alpaca. Repeatable."),
        task: list[str] = typer.Option([], "--task", "-t", help="Run only this task of the suite. Repeatable."),
        limit: int | None = typer.Option(None, min=1, help="Score only the first N samples of each task (for quick trials)."),
        batch_size: int = typer.Option(16, "--batch-size", "--batch_size", min=1, help="Sequences per forward pass."),
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

        model, lm_args, backend = lm_eval_aliases(model, model_args, backend)
        tasks = [*task, *(t.strip() for t in (tasks_csv or "").split(",") if t.strip())]
        cfg = validate_config(EvalConfig, {
            "suite": suite, "model": model, "out": out, "adapters": [*adapter, *([lm_args["adapter"]] if "adapter" in lm_args else [])],
            "base_out": base_out, "noise_seeds": noise_seed, "vars": parse_vars(var), "tasks": tasks, "history": record,
            "series": series, "history_db": history_db, "num_fewshot": num_fewshot, "format": output_format,
            "report_to": report_to, "tracking": {"project": project},
            "options": {"batch_size": lm_args.get("batch_size", batch_size), "dtype": lm_args.get("dtype", dtype),
                        "device": lm_args.get("device", device), "backend": backend, "lora_mode": lora_mode,
                        "quantize": lm_args.get("quantize", quantize), "limit": limit, "seed": seed, "n_boot": n_boot,
                        "progress": not quiet, "cache_dir": None if no_cache else (cache_dir or default_cache_dir())},
        }, "dataforge eval")
        loaded, run = evaluate(cfg)
        print_summary(Console(), loaded, run)

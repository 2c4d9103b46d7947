"""`dataforge train` and `dataforge export`: a thin shell over `dataforge.train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dataforge.cli.options import config_epilog, parse_mix, parse_sets
from dataforge.train.config import Objective, TrainConfig, load_train_config

OBJECTIVES = tuple(o.value for o in Objective)


def print_summary(console: Console, manifest: dict) -> None:
    stats = manifest["stats"]
    evals = ", ".join(f"{k[len('final_'):]} {v:.4f}" for k, v in stats.items() if k.startswith("final_eval"))
    console.print(f"trained {manifest['method']} on {manifest['base_model']['name']}: {stats['steps_run']} steps, "
                  f"final train loss {stats['final_loss']}" + (f"; {evals}" if evals else ""))
    console.print(f"{stats['trained_tokens_per_s']:,.0f} trained tokens/s ({stats['tokens_per_s']:,.0f} all), "
                  f"padding {stats['padding_fraction']:.1%}, peak memory {stats['peak_memory_bytes'] / 2**20:,.0f} MiB")
    if stats.get("trained_pairs_per_s") is not None:
        console.print(f"{stats['trained_pairs_per_s']:,.2f} trained pairs/s ({manifest['objective']})")


def register(app: typer.Typer) -> None:
    @app.command(epilog=config_epilog(TrainConfig), rich_help_panel="Train")
    def train(
        config: Path | None = typer.Argument(None, help="Train YAML (see pipelines/train_*.yaml). Optional with --data."),
        data: str | None = typer.Option(None, "--data", "-d", help="Build run folder, or a pipeline YAML to build first."),
        model: str | None = typer.Option(None, help="Base model: 'tiny', a local folder or a hub id."),
        method: str | None = typer.Option(None, help="lora, qlora, full, or a peft method name (ia3, prompt_tuning, ...); "
                                                     "or an objective (sft, dpo, kto, reward), trained with LoRA "
                                                     "unless the config names another method."),
        objective: str | None = typer.Option(None, help="sft, dpo, kto or reward (dpo/kto/reward need a preference build)."),
        output: str | None = typer.Option(None, "--output", "-o", help="Run folder."),
        mix: str | None = typer.Option(None, help="Train mix by source, e.g. 'domain=0.8,general=0.2' (pipeline YAML data)."),
        learning_rate: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
        epochs: float | None = typer.Option(None, help="Passes over the train split."),
        max_steps: int | None = typer.Option(None, help="Optimizer steps; overrides --epochs."),
        batch_size: int | None = typer.Option(None, help="Sequences per micro-batch per process."),
        grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step."),
        seed: int | None = typer.Option(None, help="Seed."),
        report_to: list[str] = typer.Option([], "--report-to", help="Log to wandb, mlflow or tensorboard (repeatable, or comma-separated); overrides report_to."),
        set_: list[str] = typer.Option([], "--set", help="Override any config key: --set lora.r=32. Repeatable."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint in the run folder."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder that holds another run."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Tune a model (LoRA, QLoRA, full, or another peft method) on a dataforge build: SFT, or DPO, KTO or a
        Bradley-Terry reward model on a preference build (`--method dpo`, `--objective reward`, ...).

        Writes adapter/ (loadable with PeftModel.from_pretrained), train_log.jsonl, loss_curve.png and
        manifest.json; eval loss is reported per source of the val split. Runs unchanged under
        `accelerate launch` (DDP, FSDP, DeepSpeed).
        """
        from dataforge.train.loop import train as run_training

        if method is not None and method.strip().lower() in OBJECTIVES:
            objective, method = objective or method.strip().lower(), None
        flag_map = {"data.path": data, "model": model, "method": method, "objective": objective, "output": output,
                    "train.learning_rate": learning_rate, "train.epochs": epochs, "train.max_steps": max_steps,
                    "train.batch_size": batch_size, "train.grad_accum": grad_accum, "seed": seed}
        overrides = {k: v for k, v in flag_map.items() if v is not None}
        if mix:
            overrides["data.mix"] = parse_mix(mix)
        if report_to:
            overrides["report_to"] = report_to
        overrides.update(parse_sets(set_))
        cfg = load_train_config(config, overrides)
        result = run_training(cfg, resume=resume, overwrite=overwrite, show_progress=not quiet)
        if result.manifest.get("kind") == "train":
            print_summary(Console(), result.manifest)
            Console().print(f"->  {result.output}")

    @app.command(rich_help_panel="Train")
    def export(
        run: Path = typer.Argument(..., help="A finished `dataforge train` run folder."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder to write."),
        merge: bool = typer.Option(False, "--merge", help="Merge the adapter into the base weights and write a "
                                                         "full model (loadable with AutoModelForCausalLM)."),
        dtype: str = typer.Option("float32", help="Dtype of the written weights: float32, bfloat16 or float16."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    ) -> None:
        """Export a trained run: a merged full model (--merge), or a standalone copy of the adapter.

        Both carry the tokenizer and the template.json of the data the model was trained on.
        """
        from dataforge.train.export import export_run

        path = export_run(run, output, merge=merge, dtype=dtype, overwrite=overwrite)
        Console().print(f"exported {'merged model' if merge else 'adapter'} ->  {path}")

    @app.command("score-reward", rich_help_panel="Train")
    def score_reward(
        run: Path = typer.Argument(..., help="A finished `dataforge train --objective reward` run folder."),
        data: Path = typer.Argument(..., help="JSONL with instruction, optional input, and completion: a text or a list of texts."),
        output: Path = typer.Option(..., "--output", "-o", help="JSONL to write: each record plus reward (or rewards)."),
        completion_field: str = typer.Option("completion", help="Field holding the completion(s)."),
        best_of: bool = typer.Option(False, "--best-of", help="With a list of completions, also write the best one "
                                                             "(best, best_index): keep the best of N."),
        batch_size: int = typer.Option(16, help="Sequences per forward pass."),
    ) -> None:
        """Score completions with a trained reward model (the scalar head at the last token of prompt + completion)."""
        from dataforge.train.reward_score import score_file
        from dataforge.util import atomic

        rows = score_file(run, data, completion_field=completion_field, best_of=best_of, batch_size=batch_size)
        atomic.write_jsonl(output, rows)
        Console().print(f"scored {len(rows)} records ->  {output}")

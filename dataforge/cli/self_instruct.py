"""`dataforge self-instruct`: a thin shell over `dataforge.selfinstruct.run.run_self_instruct`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dataforge.cli.options import apply_sets, config_epilog, parse_sets
from dataforge.config.base import read_yaml_mapping, validate_config
from dataforge.errors import ConfigError
from dataforge.paths import resolve_data_path
from dataforge.selfinstruct.config import SelfInstructConfig


def self_instruct_config_from_cli(config: Path | None, overrides: dict) -> SelfInstructConfig:
    data: dict = {}
    base_dir = None
    if config is not None:
        data = read_yaml_mapping(config)
        base_dir = config.resolve().parent
    apply_sets(data, overrides)
    if isinstance(data.get("seeds"), str):
        data["seeds"] = resolve_data_path(data["seeds"], base_dir)
    return validate_config(SelfInstructConfig, data, str(config) if config else "(flags)")


def _progress_display(console: Console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]self-instruct"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("tasks  acceptance {task.fields[rate]}  prompts {task.fields[prompts]}"),
                    TimeElapsedColumn(), console=console, transient=False)


def print_summary(console: Console, manifest: dict, out: Path) -> None:
    acc, gen = manifest["accounting"], manifest["generation"]
    console.print(f"{acc['accepted']:,} tasks accepted of {acc['candidates']:,} candidates "
                  f"({acc['acceptance_rate']:.1%}); {acc['alpaca_rows']:,} Alpaca rows, "
                  f"{manifest['num_prompts']:,} prompts, status {manifest['status']}")
    dropped = {name: f["rejected"] for name, f in acc["per_filter"].items() if f["rejected"]}
    if dropped:
        console.print("rejected by filter: " + ", ".join(f"{k} {v:,}" for k, v in dropped.items()))
    empty = acc.get("unparseable_completions", 0)
    if empty:
        console.print(f"{empty:,} completions for new instructions held none that could be parsed "
                      f"(recorded in {out / 'rejects.jsonl'})")
        if manifest["prompt_style"] == "chat" and acc["candidates"] < empty:
            console.print("[yellow]the prompts went through the model's chat template[/] (prompt style chat, "
                          "chosen because the tokenizer has one); a base model continues a plain prompt "
                          "better: --prompt-style completion")
    if gen["tokens_per_s"] is not None:
        console.print(f"generated {gen['completion_tokens']:,} tokens in {gen['generation_seconds']:,.1f} s "
                      f"({gen['tokens_per_s']:,.0f} tok/s)")
    if manifest["status"] == "budget_exhausted":
        console.print(f"[yellow]stopped at the prompt budget before reaching {manifest['target_tasks']} tasks[/]; "
                      "raise --max-prompts and rerun to continue")
    console.print(f"->  {out}")


def register(app: typer.Typer) -> None:
    @app.command("self-instruct", epilog=config_epilog(SelfInstructConfig), rich_help_panel="Data")
    def self_instruct(
        config: Path | None = typer.Argument(None, help="Self-instruct YAML (see pipelines/self_instruct*.yaml). Optional with --seeds."),
        seeds: str | None = typer.Option(None, "--seeds", "-s", help="Seed tasks (Self-Instruct jsonl or Alpaca json/jsonl); demo:seed_tasks.jsonl for the bundled ones."),
        model: str | None = typer.Option(None, "--model", "-m", help="'tiny', a local folder, a hub id, or the endpoint's model name."),
        backend: str | None = typer.Option(None, "--backend", "-b", help="transformers, vllm or openai."),
        adapter: str | None = typer.Option(None, "--adapter", "-a", help="peft adapter folder: generate with the tune (transformers, or vllm on its fastest path)."),
        base_url: str | None = typer.Option(None, "--base-url", help="openai backend: endpoint base URL, e.g. http://127.0.0.1:8000/v1."),
        method: str | None = typer.Option(None, help="self_instruct (Wang et al. 2022) or alpaca."),
        num_tasks: int | None = typer.Option(None, "--num-tasks", "-n", help="Target number of accepted tasks."),
        max_prompts: int | None = typer.Option(None, "--max-prompts", help="Prompt budget (default 20 x num_tasks)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Prompts per generation call (progress is saved after each)."),
        prompt_style: str | None = typer.Option(None, "--prompt-style", help="auto, completion or chat."),
        output: str | None = typer.Option(None, "--output", "-o", help="Output folder; an existing run there is resumed."),
        seed: int | None = typer.Option(None, help="Seed."),
        set_: list[str] = typer.Option([], "--set", help="Override any config key: --set filters.novelty_threshold=0.6. Repeatable."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run in the output folder and start over."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Generate new instruction-tuning tasks from seed tasks (Self-Instruct, or the Alpaca variant).

        Writes tasks.alpaca.jsonl (accepted tasks), pool.jsonl (machine instructions), rejects.jsonl
        (every dropped candidate with its filter; the most similar instruction for novelty) and
        manifest.json. Every completion is journaled in generations.jsonl before use, so rerunning
        the same command after a crash or Ctrl-C continues where it stopped without paying twice.
        """
        from dataforge.selfinstruct.run import run_self_instruct

        flag_map = {"seeds": seeds, "model": model, "backend.name": backend, "backend.base_url": base_url,
                    "backend.adapter": adapter,
                    "method": method, "num_tasks": num_tasks, "max_prompts": max_prompts, "batch_size": batch_size,
                    "prompt_style": prompt_style, "output": output, "seed": seed}
        overrides = {k: v for k, v in flag_map.items() if v is not None}
        overrides.update(parse_sets(set_))
        if config is None and "seeds" not in overrides:
            raise ConfigError("no seeds: give a self-instruct YAML or --seeds FILE")
        cfg = self_instruct_config_from_cli(config, overrides)
        console = Console(stderr=True)
        if quiet:
            result = run_self_instruct(cfg, overwrite=overwrite)
        else:
            with _progress_display(console) as display:
                bar = display.add_task("self-instruct", total=cfg.num_tasks, rate="-", prompts=0)

                def show(ledger, target: int) -> None:
                    display.update(bar, completed=min(ledger.accepted, target), rate=f"{ledger.acceptance_rate:.1%}",
                                   prompts=ledger.prompts)

                result = run_self_instruct(cfg, overwrite=overwrite, progress=show)
        print_summary(Console(), result.manifest, result.output)

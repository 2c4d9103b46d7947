"""`dataforge tiny-model`: build, inspect and feed the built-in tiny Llama.

`build` pretrains it from the committed docstring corpus, `info` prints how a folder was built and
verifies its checksums, `corpus` re-extracts the corpus from this interpreter and `demo-data`
regenerates the bundled demo files.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dataforge.errors import InputError, StateError
from dataforge.paths import DEMO_DATA_DIR, TINY_MODEL_DIR
from dataforge.tiny.demo_data import DEMO_SEED

console = Console()


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace a folder that is not a tiny-model build unless told to."""
    from dataforge.tiny.folder import BUILD_INFO

    if out.exists() and not out.is_dir():
        raise StateError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_INFO).is_file() and not overwrite:
        raise StateError(f"{out} holds something other than a tiny-model build; pass --overwrite to replace it")


def _build(out: Path, steps: int | None, seq_len: int | None, batch_size: int | None,
           learning_rate: float | None, seed: int | None, threads: int | None, overwrite: bool,
           quiet: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dataforge.config.base import validate_config
    from dataforge.tiny.folder import write_model_folder
    from dataforge.tiny.pretrain import PretrainConfig, pretrain

    flags = {"steps": steps, "seq_len": seq_len, "batch_size": batch_size, "learning_rate": learning_rate,
             "seed": seed, "threads": threads}
    cfg = validate_config(PretrainConfig, {k: v for k, v in flags.items() if v is not None}, "(flags)")
    _check_target(out, overwrite)
    progress = Progress(TextColumn("pretraining"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet)
    with progress:
        task = progress.add_task("pretrain", total=cfg.steps, loss=float("nan"), tps=0.0)
        model, tokenizer, info = pretrain(
            cfg, on_step=lambda step, loss, tps: progress.update(task, completed=step, loss=loss, tps=tps))
    write_model_folder(model, tokenizer, info, out)
    ppl = info["heldout_perplexity"]
    console.print(f"held-out perplexity {ppl['random_init']:,.1f} (random init) -> {ppl['trained']:,.1f} (trained); "
                  f"{info['tokens_seen']:,} tokens in {info['wall_seconds']:.0f} s  ->  {out}")


def _info(folder: Path) -> None:
    from dataforge.tiny.folder import read_build_info, verify_checksums

    info = read_build_info(folder)
    table = Table(title=f"tiny model {folder}", show_header=False)
    ppl = info["heldout_perplexity"]
    rows = [
        ("parameters", f"{info['parameters']:,}"),
        ("steps", f"{info['steps']:,}  (seq len {info['config']['seq_len']}, batch {info['config']['batch_size']}, seed {info['config']['seed']})"),
        ("tokens seen", f"{info['tokens_seen']:,}  ({info['epochs']} epochs of the corpus train part)"),
        ("held-out perplexity", f"{ppl['random_init']:,.2f} random init -> {ppl['trained']:,.2f} trained"),
        ("corpus", f"{info['corpus']['file']} sha256 {info['corpus']['sha256'][:16]}...  "
                   f"({info['corpus']['train_documents']} train / {info['corpus']['heldout_documents']} held-out docs)"),
        ("wall time", f"{info['wall_seconds']:.0f} s on {info['threads']} threads ({info['tokens_per_second']:,.0f} tok/s)"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    problems = verify_checksums(folder)
    if problems:
        raise InputError("checksums do not match SHA256SUMS:\n  " + "\n  ".join(problems), file=str(folder))
    console.print("[green]checksums OK[/]")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The built-in tiny Llama: build it, inspect it, regenerate its corpus and demo data.",
                        no_args_is_help=True)
    app.add_typer(group, name="tiny-model", rich_help_panel="Models")

    @group.command("build")
    def build(
        output: Path = typer.Option(TINY_MODEL_DIR, "--output", "-o", help="Model folder to write (replaced atomically)."),
        steps: int | None = typer.Option(None, help="Optimizer steps (default 250)."),
        seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per training sequence (default 512)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per step (default 8)."),
        learning_rate: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 3e-3)."),
        seed: int | None = typer.Option(None, help="Seed for initialisation and batch order (default 0)."),
        threads: int | None = typer.Option(None, help="torch threads (default: available cores)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder that is not a tiny-model build."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Pretrain the tiny model (tokenizer and weights) on the committed docstring corpus."""
        _build(output, steps, seq_len, batch_size, learning_rate, seed, threads, overwrite, quiet)

    @group.command("info")
    def info(
        folder: Path = typer.Argument(TINY_MODEL_DIR, help="Model folder (default: the built-in one)."),
    ) -> None:
        """Print how a tiny-model folder was built and verify its checksums (exit 2 if they differ)."""
        _info(folder)

    @group.command("corpus")
    def corpus(
        output: Path = typer.Option(None, "--output", "-o", help="Folder to write (default: the bundled corpus folder)."),
    ) -> None:
        """Re-extract the docstring corpus from this interpreter's standard library."""
        from dataforge.tiny.corpus import CORPUS_DIR, build_corpus

        counts = build_corpus(output or CORPUS_DIR)
        console.print(f"{counts['documents']:,} documents ({counts['train']:,} train, {counts['heldout']:,} held-out)"
                      f"  ->  {output or CORPUS_DIR}")

    @group.command("demo-data")
    def demo_data(
        output: Path = typer.Option(DEMO_DATA_DIR, "--output", "-o", help="Folder to write."),
        seed: int = typer.Option(DEMO_SEED, help="Seed of the generator."),
    ) -> None:
        """Regenerate the demo data (domain, general, seed tasks) with its planted problems."""
        from dataforge.tiny.demo_data import write_demo_data

        planted = write_demo_data(output, seed)
        for name, entry in planted.items():
            counts = ", ".join(f"{k} {len(v)}" for k, v in entry["planted"].items())
            console.print(f"{name}: {entry['lines']} lines; planted {counts}")

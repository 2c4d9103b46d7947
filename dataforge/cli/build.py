"""`dataforge build`: a pipeline YAML, or quick mode with --input flags and defaults for the rest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dataforge.cli.options import apply_sets, config_epilog, parse_mix, parse_sets
from dataforge.config.base import read_yaml_mapping, validate_config
from dataforge.config.build import BuildConfig
from dataforge.errors import ConfigError


def parse_input(spec: str) -> dict:
    """`domain=data/a.jsonl` -> named source; `data/a.jsonl` -> source named after the file."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return {"path": path, "source": name}
    stem = Path(spec).name.split(".")[0] or "default"
    return {"path": spec, "source": stem}


def build_config_from_cli(config: Path | None, inputs: list[str], overrides: dict) -> tuple[BuildConfig, Path | None]:
    data: dict = {}
    base_dir = None
    if config is not None:
        data = read_yaml_mapping(config)
        base_dir = config.resolve().parent
    if inputs:
        data["inputs"] = [parse_input(s) for s in inputs]
    if "inputs" not in data:
        raise ConfigError("no inputs: give a pipeline YAML or at least one --input")
    apply_sets(data, overrides)
    return validate_config(BuildConfig, data, str(config) if config else "(flags)"), base_dir


def print_summary(console: Console, manifest: dict, run_dir: Path, reused: list[str]) -> None:
    table = Table(title=f"build {run_dir}", show_lines=False)
    for col in ("source", "read", "kept", "rejected", "train", "val", "test"):
        table.add_column(col, justify="right" if col != "source" else "left")
    for src, s in manifest["sources"].items():
        table.add_row(src, f"{s['read']:,}", f"{s['kept']:,}", f"{s['rejected']:,}",
                      *(f"{s['by_split'][k]:,}" for k in ("train", "val", "test")))
    console.print(table)
    reasons: dict[str, int] = {}
    for s in manifest["sources"].values():
        for r, n in s["rejected_by_reason"].items():
            reasons[r] = reasons.get(r, 0) + n
    if reasons:
        console.print("rejected by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    for read in (s for step in manifest["steps"] if step["name"] == "collect"
                 for s in step.get("stats", {}).get("inputs", [])):
        if read.get("unread_bytes"):
            console.print(f"[yellow]not read[/]: {read['unread_bytes']:,} bytes of {read['path']} held no record "
                          "that could be parsed (see rejects.jsonl)")
        if read.get("encoding") not in (None, "utf-8", "utf-8-sig"):
            console.print(f"decoded from {read['encoding'].upper()}: {read['path']}")
    if reused == ["all"]:
        console.print(f"[cyan]up to date[/]: nothing changed since the last build of {run_dir}; reused it whole")
    elif reused:
        console.print(f"[cyan]reused from cache[/]: {', '.join(reused)}")
    console.print(f"dataset fingerprint {manifest['fingerprint']}  ->  {run_dir}")


def register(app: typer.Typer) -> None:
    @app.command(epilog=config_epilog(BuildConfig), rich_help_panel="Data")
    def build(
        config: Path | None = typer.Argument(None, help="Pipeline YAML (see pipelines/). Optional in quick mode."),
        input: list[str] = typer.Option([], "--input", "-i", help="Input file/folder/hub id; prefix a source name as NAME=PATH. Repeatable; replaces the YAML's inputs."),
        template: str | None = typer.Option(None, "--template", "-t", help="Template name (templates/) or path."),
        output: str | None = typer.Option(None, "--output", "-o", help="Run folder."),
        tokenizer: str | None = typer.Option(None, help="Tokenizer: 'tiny', a folder or a hub id."),
        max_length: int | None = typer.Option(None, help="Maximum tokens per record."),
        pack: bool | None = typer.Option(None, "--pack/--no-pack", help="Pack train records."),
        mix: str | None = typer.Option(None, help="Mix proportions, e.g. 'domain=0.8,general=0.2'."),
        seed: int | None = typer.Option(None, help="Seed."),
        on_error: str | None = typer.Option(None, "--on-error", help="Bad records: skip (reject with reason, default) or fail (exit 2)."),
        set_: list[str] = typer.Option([], "--set", help="Override any config key: --set dedupe.near.threshold=0.85. Repeatable."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing into a folder that holds a different run."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Build a dataset: collect, clean, template, dedupe, decontaminate, split, mix, tokenize.

        Every record read is either kept or rejected with a reason (rejects.jsonl); the run folder's
        manifest.json holds the config, input hashes, per-step and per-source counts.
        """
        from dataforge.data.pipeline import run_build

        overrides = {}
        flag_map = {"template.name": template, "output": output, "tokenize.tokenizer": tokenizer,
                    "tokenize.max_length": max_length, "tokenize.pack": pack, "seed": seed, "on_error": on_error}
        overrides.update({k: v for k, v in flag_map.items() if v is not None})
        if mix:
            overrides["mix.proportions"] = parse_mix(mix)
        overrides.update(parse_sets(set_))
        cfg, base_dir = build_config_from_cli(config, input, overrides)
        result = run_build(cfg, overwrite=overwrite, base_dir=base_dir, show_progress=not quiet)
        print_summary(Console(), result.manifest, result.run_dir, result.reused)

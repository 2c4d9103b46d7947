"""`dataforge build`: a pipeline YAML, or quick mode with --input flags and defaults for the rest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
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
    print_near_duplicate_shares(console, manifest)
    collect = next((s.get("stats", {}) for s in manifest["steps"] if s["name"] == "collect"), {})
    for src, fields in collect.get("ignored_fields", {}).items():
        console.print(f"{src}: ignored fields: " + ", ".join(f"{f} ({n:,} records)" for f, n in fields.items()))
    warnings = list(collect.get("warnings", []))
    warnings += [f"source '{src}' kept no record after the build's filters ({s['read']:,} read)"
                 for src, s in manifest["sources"].items() if s["kept"] == 0 and s["read"] > 0
                 and not any(w.startswith(f"source '{src}' ") for w in warnings)]
    for warning in warnings:
        console.print(f"[bold red]WARNING[/]: {warning}")
    for line in tokenize_lines(manifest) + placeholder_lines(manifest):
        console.print(line)
    for read in (s for step in manifest["steps"] if step["name"] == "collect"
                 for s in step.get("stats", {}).get("inputs", [])):
        if read.get("unread_bytes"):
            console.print(f"[yellow]not read[/]: {read['unread_bytes']:,} bytes of {read['path']} held no record "
                          "that could be parsed (see rejects.jsonl)")
        if read.get("encoding") not in (None, "utf-8", "utf-8-sig"):
            console.print(f"decoded from {read['encoding'].upper()}: {read['path']}")
    if reused == ["all"]:
        console.print(f"[cyan]up to date[/]: no config, input, file read or code changed since the last build of "
                      f"{run_dir}; reused it whole")
    elif reused:
        console.print(f"[cyan]reused from cache[/]: {', '.join(reused)}")
    console.print(f"dataset fingerprint {manifest['fingerprint']}  ->  {run_dir}")


def print_near_duplicate_shares(console: Console, manifest: dict) -> None:
    """Share of each source that near-dedupe removed, with a warning above `dedupe.near.warn_share`:
    a high share is what a set of similar-on-purpose records (shared passages, templates) looks like."""
    step = next((s for s in manifest.get("steps", []) if s.get("name") == "dedupe_near"), None)
    by_source = (step or {}).get("stats", {}).get("by_source")
    if not by_source:
        return
    near = manifest["config"]["dedupe"]["near"]
    shares = {src: s["removed"] / s["in"] if s["in"] else 0.0 for src, s in by_source.items()}
    parts = [f"{src} skipped" if s["skipped"] else f"{src} {shares[src]:.1%} ({s['removed']:,} of {s['in']:,})"
             for src, s in by_source.items()]
    console.print("near duplicates removed: " + ", ".join(parts))
    for src, share in shares.items():
        if share > near["warn_share"]:
            console.print(f"[yellow]warning[/]: near-dedupe removed {share:.1%} of source '{src}' (more than "
                          f"dedupe.near.warn_share {near['warn_share']:g}). If its records are alike on purpose "
                          f"(questions over a shared passage, a template), check clusters.jsonl, compare fewer "
                          f"fields (dedupe.near.fields) or set dedupe.near.skip_sources: [{src}].")


def tokenize_lines(manifest: dict) -> list[str]:
    """Per source, the records truncated and dropped for length, summed over the splits."""
    tok = manifest.get("tokenize") or {}
    totals: dict[str, dict[str, int]] = {}
    for counts in (tok.get("counts") or {}).values():
        for src, c in (counts.get("by_source") or {}).items():
            for k, n in c.items():
                totals.setdefault(src, {}).setdefault(k, 0)
                totals[src][k] += n
    words = {"truncated": "truncated", "dropped": "dropped as too long",
             "prompt_truncated_away": "dropped as prompt_truncated_away (instruction would be cut)"}
    lines = []
    for src, c in sorted(totals.items()):
        parts = [f"{c[k]:,} {w}" for k, w in words.items() if c.get(k)]
        if parts:
            lines.append(f"over max_length {tok.get('max_length')}: {src}: {', '.join(parts)}")
    return lines


def placeholder_lines(manifest: dict) -> list[str]:
    """A warning per source for `{{placeholders}}` left in kept records, and a note of those filled."""
    stats = next((s.get("stats") or {} for s in manifest.get("steps", []) if s.get("name") == "clean"), {})
    lines = []
    for src, names in sorted((stats.get("filled") or {}).items()):
        lines.append(f"filled placeholders: {src}: " + ", ".join(f"{escape(k)} in {n:,} records" for k, n in names.items()))
    for src, names in sorted((stats.get("placeholders") or {}).items()):
        lines.append(f"[yellow]warning[/]: placeholders left in the data: {src}: "
                     + ", ".join(f"{escape(k)} in {n:,} records" for k, n in names.items())
                     + "; fill them with --fill NAME=VALUE (clean.fill) or they are trained as written")
    return lines


def parse_fill(pairs: list[str]) -> dict[str, str]:
    """`--fill name=Forge` -> {"clean.fill.name": "Forge"} (values stay text, unlike --set)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--fill {pair!r}: expected NAME=VALUE, e.g. --fill name=Forge for {{{{name}}}}")
        out[f"clean.fill.{key.strip()}"] = value
    return out


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
        seed: int | None = typer.Option(None, help="Seed of the split, the mix and template variants (MinHash: --set dedupe.near.seed=N)."),
        on_error: str | None = typer.Option(None, "--on-error", help="Bad records: skip (reject with reason, default) or fail (exit 2)."),
        fill: list[str] = typer.Option([], "--fill", help="Fill a placeholder left in the data: --fill name=Forge turns {{name}} into Forge. Repeatable."),
        set_: list[str] = typer.Option([], "--set", help="Override any config key: --set dedupe.near.threshold=0.85. Repeatable."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing into a folder that holds a different run."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
        engine: str = typer.Option("auto", "--engine", help="Where the build runs: auto, local (in memory), stream (bounded memory) or ray (a Ray cluster; pip install dataforge[ray])."),
        address: str | None = typer.Option(None, "--address", help="Ray cluster address for --engine ray (default: RAY_ADDRESS, else a local Ray runtime)."),
    ) -> None:
        """Build a dataset: the stages collect, clean, dedupe_exact, dedupe_near, dedupe_reference, decontaminate, split, mix, template, tokenize in this order (a stage its config turns off is skipped).

        Every record read is either kept or rejected with a reason (rejects.jsonl); the run folder's
        manifest.json holds the config, input hashes, per-step and per-source counts. A stage is
        reused from the cache when its config, its input and the content of every file it reads
        (template, tokenizer files, reference and eval sets) are unchanged.
        """
        from dataforge.data.engines import get_engine

        overrides = {}
        flag_map = {"template.name": template, "output": output, "tokenize.tokenizer": tokenizer,
                    "tokenize.max_length": max_length, "tokenize.pack": pack, "seed": seed, "on_error": on_error}
        overrides.update({k: v for k, v in flag_map.items() if v is not None})
        if mix:
            overrides["mix.proportions"] = parse_mix(mix)
        overrides.update(parse_fill(fill))
        overrides.update(parse_sets(set_))
        cfg, base_dir = build_config_from_cli(config, input, overrides)
        if address is not None and engine != "ray":
            raise ConfigError(["--address: only --engine ray runs on a cluster"])
        options = {"address": address} if engine == "ray" else {}
        run = get_engine("local" if engine == "auto" else engine)
        result = run(cfg, overwrite=overwrite, base_dir=base_dir, show_progress=not quiet, **options)
        print_summary(Console(), result.manifest, result.run_dir, result.reused)

"""`dataforge quickstart`: the whole product on the built-in tiny model, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dataforge.cli.options import config_epilog, parse_sets
from dataforge.errors import ConfigError
from dataforge.quickstart.config import SIZES, QuickstartConfig


def register(app: typer.Typer) -> None:
    @app.command(epilog=config_epilog(QuickstartConfig), rich_help_panel="Start here")
    def quickstart(
        out: Path = typer.Option(Path("quickstart"), "--out", "-o", help="Folder for every artifact; rerunning into it reuses what is done."),
        size: str = typer.Option("full", help="full (the demo, ~6 min on 2 idle CPU cores) or small (every step at toy size, for a smoke check)."),
        backend: str | None = typer.Option(None, help="Self-instruct engine: auto (vllm when installed), vllm or transformers."),
        set_: list[str] = typer.Option([], "--set", help="Override any quickstart key: --set tune.max_steps=200. Repeatable."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display; print the summary only."),
        with_dpo: bool = typer.Option(False, "--with-dpo", help="Then the preference loop too: build the demo pairs, "
                                                                "DPO-tune, evaluate and compare (about 1 more min on 2 idle cores)."),
    ) -> None:
        """Build the demo dataset, grow its seed tasks by self-instruct, run a domain-only and a mixed
        LoRA tune of the tiny model, evaluate base and tunes, compare them and write the report.

        Prints what each tune gained on the domain task and lost on general text, and the report's path.
        With --with-dpo, also what a DPO tune did on held-out preference pairs and to general text.
        """
        from dataforge.quickstart.run import run_quickstart
        from dataforge.quickstart.summary import print_summary

        if size not in SIZES:
            raise ConfigError(f"--size: must be one of {', '.join(SIZES)} (got {size!r})")
        overrides = parse_sets(set_)
        if backend is not None:
            overrides["self_instruct.backend"] = backend
        if with_dpo:
            overrides["dpo.enabled"] = True
        result = run_quickstart(out, size=size, overrides=overrides, show_progress=not quiet)
        print_summary(Console(), result.summary, str(result.report_html))

"""`dataforge push`: a build, an adapter (train run or export) or an eval folder to the Hugging Face Hub."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Share")
    def push(
        run: Path = typer.Argument(..., help="A build, train run, export or eval results folder."),
        repo: str = typer.Option(..., "--repo", help="Hub repository id, e.g. your-name/support-sft."),
        private: bool = typer.Option(False, "--private", help="Create the repository as private."),
        compare: list[Path] = typer.Option([], "--compare", help="With an adapter or model: a `dataforge compare --json` file, or the base and tuned results folders (give --compare twice); adds the table of deltas to the card."),
        to_folder: Path | None = typer.Option(None, "--to-folder", help="Write the files that would be uploaded (card included) to this new folder, and upload nothing."),
        message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
    ) -> None:
        """Upload a folder with a generated dataset or model card (README.md).

        The card is written from the manifests: sources and their counts, rejects by reason, dedup and
        decontamination counts, the template and, with --compare, the deltas against the base.
        """
        from dataforge.errors import StateError
        from dataforge.hub.push import stage, upload

        console = Console()
        if to_folder is not None:
            if to_folder.exists():
                raise StateError(f"{to_folder} exists; --to-folder writes a new folder")
            staged = stage(run, repo, to_folder, compare)
            console.print(f"{staged.kind} folder staged for {staged.repo_type} repo {repo}: "
                          f"{len(staged.files)} files ->  {to_folder}")
            return
        with tempfile.TemporaryDirectory(prefix="dataforge-push-") as tmp:
            staged = stage(run, repo, Path(tmp) / "repo", compare)
            url = upload(staged, repo, private=private, commit_message=message)
        console.print(f"pushed {len(staged.files)} files of a {staged.kind} folder to {staged.repo_type} repo "
                      f"{repo}: {url}")

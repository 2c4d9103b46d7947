"""`dataforge inspect RUN`: what a build produced, and exactly which tokens a tune will train on.

Reads a build run folder (splits/*.parquet, tokenized/, manifest.json) and prints record counts by
source and split, token-length statistics per split (plus a histogram PNG written to
RUN/inspect/lengths.png), and decoded samples with the trained tokens marked: bold green on a
terminal, or wrapped in ⟦ ⟧ with --plain. Samples are the check that the loss mask is what you
meant; nothing else in the pipeline shows the tokens themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dataforge.errors import InputError

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
MASKED_STYLE, TRAINED_STYLE = "dim", "bold green"
SPLIT_ORDER = ("train", "val", "test")


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Data")
    def inspect(
        run_dir: Path = typer.Argument(..., help="A build run folder (the build's --output)."),
        samples: int = typer.Option(3, "--samples", "-n", min=0, help="Decoded samples to show."),
        split: str = typer.Option("train", "--split", help="Split to draw samples from."),
        plain: bool = typer.Option(False, "--plain", help=f"No colours; mark trained text as {TRAINED_OPEN}text{TRAINED_CLOSE} "
                                   "(the default when the output is not a terminal, e.g. a log or a pipe)."),
        tokenizer: str | None = typer.Option(None, help="Tokenizer for decoding; default: the one the build used."),
        seed: int = typer.Option(0, help="Seed for choosing the samples."),
    ) -> None:
        """Counts by source and split, token-length histograms, and samples showing the trained tokens."""
        console = Console(highlight=False, soft_wrap=True)
        # Colour is the only trained/masked marker on a terminal; in a log or a pipe it would be lost.
        plain = plain or not console.is_terminal
        console.no_color = plain
        inspect_run(run_dir, console, samples=samples, split=split, plain=plain, tokenizer=tokenizer, seed=seed)


def inspect_run(run_dir: Path, console: Console, *, samples: int = 3, split: str = "train", plain: bool = False,
                tokenizer: str | None = None, seed: int = 0) -> None:
    manifest = read_manifest(run_dir)
    splits = _split_files(run_dir)
    console.print(counts_table(splits))
    tokenized = _pair_sides(_load_tokenized(run_dir))
    if tokenized is not None and split not in tokenized and f"{split} chosen" in tokenized:
        split = f"{split} chosen"
    if tokenized is None:
        console.print("no tokenized/ folder (the build ran with tokenize.enabled: false); token lengths skipped")
    else:
        lengths = {name: _lengths(ds) for name, ds in tokenized.items()}
        console.print(lengths_table(tokenized, lengths))
        png = write_length_histograms(lengths, run_dir / "inspect" / "lengths.png", _max_length(manifest))
        console.print(f"length histograms -> {png}")
    turns = ((manifest.get("config") or {}).get("tokenize") or {}).get("train_turns")
    if tokenized is not None and turns:
        console.print("trained turns: " + ("every assistant turn, each with its turn end (tokenize.train_turns: all)"
                                           if turns == "all" else "the final answer only (tokenize.train_turns: last)"))
    if samples:
        if tokenized is not None:
            _show_token_samples(console, tokenized, split, samples, seed, plain,
                                tokenizer or _build_tokenizer(manifest, run_dir))
        else:
            _show_text_samples(console, splits, split, samples, seed, plain)


def read_manifest(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise InputError("not a build run folder (it does not exist or is not a folder)", file=str(run_dir))
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise InputError("no manifest.json: not a finished build run folder", file=str(run_dir))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest is not valid JSON: {exc}", file=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("kind", "build") != "build":
        raise InputError("manifest is not a build manifest (kind must be 'build')", file=str(path), field="kind")
    return manifest


def _split_files(run_dir: Path) -> dict[str, Path]:
    files = {p.stem: p for p in (run_dir / "splits").glob("*.parquet")}
    if not files:
        raise InputError("no splits/*.parquet in the run folder", file=str(run_dir))
    return {name: files[name] for name in sorted(files, key=_split_order)}


def _split_order(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def counts_table(splits: dict[str, Path]) -> Table:
    import polars as pl

    counts: dict[str, dict[str, int]] = {}
    for name, path in splits.items():
        try:
            frame = pl.read_parquet(path, columns=["source"])
        except Exception as exc:  # polars raises several types for unreadable or column-less files
            raise InputError(f"cannot read the split's sources: {exc}", file=str(path), field="source") from None
        for source, n in frame.group_by("source").len().rows():
            counts.setdefault(source, {})[name] = n
    table = Table(title="records by source and split")
    table.add_column("source")
    for name in [*splits, "total"]:
        table.add_column(name, justify="right")
    for source in sorted(counts, key=str):
        row = [counts[source].get(name, 0) for name in splits]
        table.add_row(str(source), *(f"{n:,}" for n in row), f"{sum(row):,}")
    totals = [sum(c.get(name, 0) for c in counts.values()) for name in splits]
    table.add_row("total", *(f"{n:,}" for n in totals), f"{sum(totals):,}", style="bold")
    return table


def _load_tokenized(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "tokenized"
    if not path.exists():
        return None
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"cannot load the tokenized dataset: {exc}", file=str(path)) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise InputError("expected a DatasetDict (one dataset per split)", file=str(path))
    return {name: loaded[name] for name in sorted(loaded, key=_split_order)}


def _pair_sides(tokenized: dict[str, Any] | None) -> dict[str, Any] | None:
    """A preference build stores two sequences per row (chosen, rejected): shown as one table per side."""
    if not tokenized or "chosen_input_ids" not in next(iter(tokenized.values())).column_names:
        return tokenized
    return {f"{name} {side}": ds.select_columns(["id", "source", f"{side}_input_ids", f"{side}_labels"])
            .rename_columns({f"{side}_input_ids": "input_ids", f"{side}_labels": "labels"})
            for name, ds in tokenized.items() for side in ("chosen", "rejected")}


def _arrow(ds: Any):
    return ds.with_format("arrow")[:]


def _lengths(ds: Any):
    from dataforge.data.tokenize import list_lengths

    return list_lengths(_arrow(ds).column("input_ids"))


def lengths_table(tokenized: dict[str, Any], lengths: dict[str, Any]) -> Table:
    import numpy as np
    import pyarrow.compute as pc

    from dataforge.data.tokenize import IGNORE_INDEX, length_stats

    table = Table(title="tokens per sequence")
    for col in ("split", "rows", "min", "p50", "p95", "max", "mean", "trained"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, ds in tokenized.items():
        stats = length_stats(lengths[name])
        arrow = _arrow(ds)
        labels = pc.list_flatten(arrow.column("labels")).to_numpy(zero_copy_only=False)
        trained = f"{float(np.mean(labels != IGNORE_INDEX)):.1%}" if len(labels) else "-"
        label = f"{name} (packed)" if "position_ids" in arrow.column_names else name
        cells = [stats[k] for k in ("min", "p50", "p95", "max", "mean")]
        table.add_row(label, f"{stats['n']:,}", *("-" if c is None else f"{c:,.0f}" for c in cells), trained)
    return table


def write_length_histograms(lengths: dict[str, Any], path: Path, max_length: int | None) -> Path:
    """One histogram per split, written atomically so a killed run never leaves a truncated PNG."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataforge.util.atomic import atomic_path

    names = list(lengths)
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.2 * max(1, len(names))), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = lengths[name]
        if len(values):
            ax.hist(values, bins=min(50, len(np.unique(values))), color="#4c72b0")
        if max_length:
            ax.axvline(max_length, color="#c44e52", linestyle="--", linewidth=1, label=f"max_length {max_length}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{name}: {len(values):,} sequences", fontsize=9)
        ax.set_ylabel("count")
    axes[-1, 0].set_xlabel("tokens per sequence")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _max_length(manifest: dict) -> int | None:
    tok = manifest.get("tokenize") or (manifest.get("config") or {}).get("tokenize") or {}
    return tok.get("max_length")


def _build_tokenizer(manifest: dict, run_dir: Path) -> str:
    for section in (manifest.get("tokenize"), (manifest.get("config") or {}).get("tokenize")):
        if isinstance(section, dict) and section.get("tokenizer"):
            return section["tokenizer"]
    raise InputError("the manifest names no tokenizer; pass --tokenizer", file=str(run_dir / "manifest.json"),
                     field="tokenize.tokenizer")


def _pick(n_rows: int, samples: int, seed: int) -> list[int]:
    import numpy as np

    k = min(samples, n_rows)
    return sorted(np.random.default_rng(seed).choice(n_rows, size=k, replace=False).tolist())


def _show_token_samples(console: Console, tokenized: dict[str, Any], split: str, samples: int, seed: int,
                        plain: bool, tokenizer_name: str) -> None:
    from dataforge.data.tokenize import IGNORE_INDEX
    from dataforge.models import load_tokenizer

    if split not in tokenized:
        raise InputError(f"no split '{split}' in the tokenized dataset (available: {', '.join(tokenized)})",
                         field="--split")
    tok = load_tokenizer(tokenizer_name)
    ds = tokenized[split]
    legend = f"{TRAINED_OPEN}trained{TRAINED_CLOSE}" if plain else "[bold green]trained[/] / [dim]masked[/]"
    console.print(f"samples from {split} ({legend}; tokenizer {tokenizer_name}):", markup=not plain)
    for row in _pick(len(ds), samples, seed):
        item = ds[row]
        ids, labels = item["input_ids"], item["labels"]
        starts = [i for i, p in enumerate(item.get("position_ids") or [0]) if p == 0]
        bounds = [*starts, len(ids)]
        for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            trained = [lab != IGNORE_INDEX for lab in labels[a:b]]
            runs = sum(1 for i, t in enumerate(trained) if t and (i == 0 or not trained[i - 1]))
            head = f"--- {split}[{row}]" + (f" record {k + 1}/{len(starts)}" if len(starts) > 1 else "") + \
                   f" ({b - a} tokens, {runs} trained span{'s' if runs != 1 else ''}) ---"
            console.print(head, markup=False)
            console.print(mark_trained(tok, ids[a:b], trained, plain))


def mark_trained(tokenizer: Any, ids: list[int], trained: list[bool], plain: bool) -> Text:
    """Decoded text with trained spans highlighted; spans are decoded whole so multi-byte characters
    split across tokens still come out right."""
    text = Text()
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or trained[i] != trained[start]:
            piece = tokenizer.decode(ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if trained[start]:
                text.append(f"{TRAINED_OPEN}{piece}{TRAINED_CLOSE}" if plain else piece, style=None if plain else TRAINED_STYLE)
            else:
                text.append(piece, style=None if plain else MASKED_STYLE)
            start = i
    return text


def _show_text_samples(console: Console, splits: dict[str, Path], split: str, samples: int, seed: int,
                       plain: bool) -> None:
    import polars as pl

    if split not in splits:
        raise InputError(f"no split '{split}' (available: {', '.join(splits)})", field="--split")
    frame = pl.read_parquet(splits[split], columns=["id", "prompt", "response"])
    console.print(f"samples from {split} (not tokenized: the response is what would be trained):", markup=False)
    for row in _pick(frame.height, samples, seed):
        r = frame.row(row, named=True)
        console.print(f"--- {split}[{row}] {r['id']} ---", markup=False)
        console.print(mark_text(r["prompt"], r["response"], plain))


def mark_text(prompt: str, response: str, plain: bool) -> Text:
    text = Text(prompt, style=None if plain else MASKED_STYLE)
    text.append(f"{TRAINED_OPEN}{response}{TRAINED_CLOSE}" if plain else response, style=None if plain else TRAINED_STYLE)
    return text

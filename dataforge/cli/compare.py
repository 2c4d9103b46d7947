"""`dataforge compare`, `report`, `history`, `score`, `export-ab` and `import-ab`: what a tune did.

All of them read results folders (from `dataforge eval`, or from `dataforge score` for a file of
model outputs), so a vLLM deployment, an API model and a local tune get the same checks.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataforge.cli.options import apply_sets, config_epilog, parse_sets
from dataforge.config.base import read_yaml_mapping, validate_config
from dataforge.errors import ConfigError, InputError

PANEL = "Evaluate"
MARK = {"improved": "[green]▲[/]", "regressed": "[red]▼[/]", "unchanged": "·"}


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    """An interval as text, escaped so rich does not read the brackets as markup."""
    return escape(f"[{_fmt(lo, signed)}, {_fmt(hi, signed)}]")


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:+.1%}"


def _p(p: float, n_boot: int) -> str:
    return f"<{1 / n_boot:.0g}" if p == 0 else f"{p:.3g}"


def _p_cell(d, n_boot: int) -> str:
    """The p-value, and the adjusted one when the comparison applies a multiple-testing correction."""
    return _p(d.p_value, n_boot) + ("" if d.p_adjusted is None else f" (adj {_p(d.p_adjusted, n_boot)})")


def parse_columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        canon, sep, yours = pair.partition("=")
        if not sep or not canon.strip() or not yours.strip():
            raise ConfigError(f"--column {pair!r}: expected CANONICAL=YOURS, e.g. prediction=model_output")
        out[canon.strip()] = yours.strip()
    return out


def _bwt(tuned, db: Path | None, series: str | None):
    from dataforge.eval.compare import backward_transfer
    from dataforge.eval.history import list_runs, run_scores, series_of

    series = series or series_of(tuned.run_id, db)
    if series is None:
        return None
    runs = list_runs(db, series=series)
    if not runs:
        raise InputError(f"no runs recorded in series {series!r}")
    ids = [r.run_id for r in runs]
    runs = runs[: ids.index(tuned.run_id) + 1] if tuned.run_id in ids else [*runs, run_scores(tuned, series=series)]
    return backward_transfer(runs) if len(runs) > 1 else None


def print_comparison(console: Console, comp, bwt, matched_by: str = "prompt hash") -> None:
    """Columns carry the runs' names: two deployments or two prompts are compared as often as a base
    and its tune."""
    from dataforge.eval.report import unique_labels

    a, b = (escape(x) for x in unique_labels([comp.base, comp.tuned]))
    title = f"{b} vs {a}  (suite {escape(comp.base.suite_name)})"
    ci_head = f"Δ [{comp.confidence:.0%} CI]"
    if console.width >= 120:
        table = Table(title=title)
        for col in ("task", "metric", a, b, ci_head, "p", "change"):
            table.add_column(col, justify="left" if col in ("task", "metric", "change") else "right",
                             no_wrap=col != "task")
        for t in comp.tasks:
            for d in t.deltas.values():
                table.add_row(f"{t.task} ({t.tag})", d.metric + (" *" if d.metric == t.primary else ""),
                              _fmt(d.base), _fmt(d.tuned), f"{_fmt(d.delta, True)} " + _ci(d.ci_low, d.ci_high, True),
                              _p_cell(d, comp.n_boot), MARK[d.verdict])
        console.print(table)
    else:
        # A narrow terminal or a CI log (80 columns): one small table per task, the CI under its delta
        # and the change mark beside p, so no column is squeezed to nothing.
        console.print(title, style="bold")
        for t in comp.tasks:
            table = Table(title=escape(f"{t.task} ({t.tag})"), title_justify="left", show_edge=False)
            for col in ("metric", a, b, ci_head, "p"):
                table.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
            for d in t.deltas.values():
                table.add_row(d.metric + (" *" if d.metric == t.primary else ""), _fmt(d.base), _fmt(d.tuned),
                              f"{_fmt(d.delta, True)}\n" + _ci(d.ci_low, d.ci_high, True),
                              f"{_p_cell(d, comp.n_boot)} {MARK[d.verdict]}")
            console.print(table)
    console.print(f"paired bootstrap on samples matched by {matched_by}, {comp.n_boot} replicates, seed {comp.seed}; "
                  f"* primary metric" + ("" if comp.correction == "none" else
                                         f"; p adjusted ({comp.correction}) over all {sum(len(t.deltas) for t in comp.tasks)} "
                                         "task x metric tests, verdicts use the adjusted p"))
    for t in comp.tasks:
        if t.n_base_only or t.n_tuned_only:
            console.print(f"[yellow]{t.task}: {t.n_paired} paired samples; {t.n_base_only} only in {a}, "
                          f"{t.n_tuned_only} only in {b} (left out)[/]")
    for name in comp.only_base + comp.only_tuned:
        console.print(f"[yellow]task {name} is in only one of the runs; not compared[/]")
    f = comp.forgetting
    if f.general:
        ft = Table(title="Forgetting (general tasks, primary metric)")
        for col in ("task", "metric", ci_head, "retention [CI]"):
            ft.add_column(col, overflow="fold", no_wrap=col != "task")
        sep = " " if console.width >= 120 else "\n"
        for r in f.general:
            ft.add_row(r.task, r.delta.metric, _fmt(r.delta.delta, True) + sep + _ci(r.delta.ci_low, r.delta.ci_high, True),
                       _fmt(r.retention) + sep + _ci(r.ci_low, r.ci_high))
        console.print(ft)
    for name, s in (("general-suite mean change", f.general_change), ("domain mean gain", f.domain_gain)):
        if s is not None:
            console.print(f"{name}: {_pct(s.value)} " + escape(f"[{_pct(s.ci_low)}, {_pct(s.ci_high)}]")
                          + f" over {s.n_tasks} task(s)")
    for t in comp.tasks:
        changed = {k: v for k, v in (t.labels or {}).items() if v["base"] or v["tuned"]}
        if changed:
            console.print(f"taxonomy {t.task}: " + ", ".join(
                f"{k} {v['base']}→{v['tuned']} (+{v['new']}/-{v['fixed']})" for k, v in changed.items()))
    if bwt is not None and bwt.rows:
        console.print(f"backward transfer over {' → '.join(bwt.runs)}: BWT {_fmt(bwt.bwt, True)} on "
                      + ", ".join(f"{r.task} {_fmt(r.transfer, True)}" for r in bwt.rows))


def _correction(value: str | None):
    """--correction checked here, so a typo is one clear line, not a traceback."""
    if value is not None and value not in ("none", "holm", "bh"):
        raise ConfigError(f"--correction must be none, holm or bh, got {value!r}")
    return value


def _build_texts(build: Path, split: str | None, ngram: int) -> tuple[list[str], str, str]:
    """(the build's texts, the mode that reads them, where they come from in words)."""
    from dataforge.eval.contamination import build_texts

    mode = "ngram" if split else "file"
    texts = build_texts(build, mode, split or "train")
    source = f"{ngram}-grams shared with {build}/splits/{split}" if split else f"spans of {build}/contamination.jsonl"
    return texts, mode, source


def _contamination(console: Console, runs: list, build: Path, split: str | None, ngram: int, seed: int, n_boot: int,
                   confidence: float) -> dict:
    """Print and return each run's clean / overlapping scores against the build."""
    from dataforge.cli.compare_extras import print_contamination
    from dataforge.eval.contamination import contamination_scores, overlapping_samples
    from dataforge.eval.report import unique_labels

    texts, mode, source = _build_texts(build, split, ngram)
    out = {}
    for label, run in zip(unique_labels(runs), runs, strict=True):
        rows = contamination_scores(run, overlapping_samples(run, texts, ngram, mode), seed, n_boot, confidence)
        print_contamination(console, label, rows, source)
        out[label] = {r.task: r.to_dict() for r in rows}
    return out


def _history_table(runs: list, tasks: list[str], metric: str | None) -> Table:
    """A few runs: one column per run, one row per task, which fits a terminal whatever the suite's size.
    Many runs: one row per run (the history as a time series)."""
    def cell(r, t: str) -> str:
        name = metric or r.primary.get(t)
        value = r.scores.get(t, {}).get(name) if name else None
        return "" if value is None else _fmt(value)

    def metric_of(t: str) -> str:
        return metric or next((r.primary[t] for r in runs if t in r.primary), "")

    suites = sorted({r.suite for r in runs})
    table = Table(title=escape(f"eval history (suite {', '.join(suites)})"))
    if len(runs) <= 6:
        table.add_column("task", overflow="fold")
        table.add_column("metric", no_wrap=True)
        for r in runs:
            table.add_column(escape(f"{r.label}\n{r.created_at[:16]}" + (f"\n{r.series}" if r.series else "")),
                             justify="right", overflow="fold")
        for t in tasks:
            table.add_row(t, metric_of(t), *(cell(r, t) for r in runs))
        return table
    table.add_column("created", no_wrap=True)
    table.add_column("label", overflow="fold")
    for t in tasks:
        table.add_column(escape(f"{t}\n{metric_of(t)}"), justify="right", overflow="fold")
    for r in runs:
        table.add_row(r.created_at[:16], escape(r.label + (f" ({r.series})" if r.series else "")),
                      *(cell(r, t) for t in tasks))
    return table


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL)
    def compare(
        base: Path = typer.Argument(..., help="Results folder of the base model, or lm-eval output (--output_path folder, model subfolder or results_*.json, run with --log_samples)."),
        tuned: list[Path] = typer.Argument(..., help="Results folder of the tuned model (same suite), or lm-eval output. With --select: several, or a folder holding one per checkpoint."),
        seed: int = typer.Option(1234, help="Bootstrap seed."),
        n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap replicates."),
        confidence: float = typer.Option(0.95, min=0.5, max=0.999, help="Confidence level of the intervals."),
        max_regression: float | None = typer.Option(None, help="Exit 1 when a task's primary metric regresses (significantly) by more than this fraction, e.g. 0.05."),
        max_forgetting: float | None = typer.Option(None, help="Exit 1 when the general tasks' mean relative change is below -this, e.g. 0.02."),
        min_domain_gain: float | None = typer.Option(None, help="Exit 1 when the domain tasks' mean relative change is below this."),
        min_bwt: float | None = typer.Option(None, help="Exit 1 when backward transfer over the series is below this."),
        significance: bool | None = typer.Option(None, "--significance/--no-significance", help="Count only regressions whose CI excludes 0 (default on)."),
        series: str | None = typer.Option(None, help="History series for backward transfer (default: the tuned run's own series, if recorded)."),
        history_db: Path | None = typer.Option(None, "--history-db", help="History store (default $DATAFORGE_HOME/history.sqlite)."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the comparison as JSON."),
        correction: str | None = typer.Option(None, "--correction", help="Multiple-testing correction of the p-values over all tasks x metrics: none, holm or bh (default: the suite gate's, else none)."),
        select: bool = typer.Option(False, "--select", help="Rank the tuned folders (checkpoints) on the primary metric and test the best against the runner-up (paired bootstrap)."),
        select_task: str | None = typer.Option(None, "--select-task", help="With --select: rank on this task's primary metric (default: the mean relative change over all tasks; a one-task suite uses its metric)."),
        noise: list[Path] = typer.Option([], "--noise", help="A re-run of the base (`dataforge eval --noise-seed`): the spread of the base over the re-runs is shown beside each delta. Repeatable."),
        contamination: Path | None = typer.Option(None, "--contamination", help="A build folder: score each task on the items its contamination.jsonl spans overlap and on the clean rest."),
        contamination_split: str | None = typer.Option(None, "--contamination-split", help="With --contamination: instead of contamination.jsonl, check items at eval time for n-grams shared with this split of the build (e.g. train)."),
        ngram: int = typer.Option(13, "--ngram", min=4, help="With --contamination: words in a shared span (as the decontaminate stage)."),
        flips: int = typer.Option(5, "--flips", min=0, help="Samples that flipped right → wrong to print per task (0: counts only)."),
        report_to: list[str] = typer.Option([], "--report-to", help="Log the deltas with CIs to wandb, mlflow or tensorboard (repeatable, or comma-separated)."),
        project: str | None = typer.Option(None, "--project", help="W&B project / MLflow experiment for --report-to."),
    ) -> None:
        """Per-task deltas with paired-bootstrap CIs, forgetting and backward transfer; exit 1 when a gate threshold is broken."""
        from dataforge.cli.compare_extras import candidate_folders, print_flips, print_noise, print_selection
        from dataforge.eval.compare import check_gate, compare_results, comparison_to_dict, gate_from_manifest
        from dataforge.eval.flips import flips as find_flips
        from dataforge.eval.lm_eval_io import load_pair
        from dataforge.eval.results import load_results
        from dataforge.track.config import TrackingConfig
        from dataforge.util.atomic import write_json

        console = Console()
        tracking = validate_config(TrackingConfig, {"report_to": report_to, "project": project}, "dataforge compare")
        if select:
            from dataforge.eval.report import unique_labels
            from dataforge.eval.selection import select_checkpoint

            a = load_results(base)
            runs = [load_results(p) for p in candidate_folders(tuned)]
            labels = [p.path.name for p in runs] if len({p.path.name for p in runs}) == len(runs) else unique_labels(runs)
            sel = select_checkpoint(a, runs, labels, select_task, seed=seed, n_boot=n_boot, confidence=confidence)
            print_selection(console, sel, confidence)
            if json_out is not None:
                write_json(json_out, {"selection": sel.to_dict()})
            return
        if len(tuned) != 1:
            raise InputError(f"compare takes one tuned results folder, got {len(tuned)} (to choose among checkpoints, add --select)")
        a, b, notes, matched_by = load_pair(base, tuned[0], seed=seed, n_boot=n_boot)
        for note in notes:
            console.print("[yellow]" + escape(note) + "[/]")
        gate = gate_from_manifest(a, {"max_regression": max_regression, "max_forgetting": max_forgetting,
                                      "min_domain_gain": min_domain_gain, "min_bwt": min_bwt,
                                      "require_significance": significance, "correction": _correction(correction)})
        comp = compare_results(a, b, seed=seed, n_boot=n_boot, confidence=confidence, correction=gate.correction)
        bwt = _bwt(b, history_db, series)
        print_comparison(console, comp, bwt, matched_by)
        spreads = None
        if noise:
            from dataforge.eval.noise import noise_floor

            spreads = noise_floor(a, [load_results(p) for p in noise])
            print_noise(console, comp, spreads, len(noise) + 1)
        task_flips = find_flips(a, b)
        print_flips(console, task_flips, flips)
        contam = _contamination(console, [a, b], contamination, contamination_split, ngram, seed, n_boot, confidence) \
            if contamination is not None else None
        failures = check_gate(comp, gate, bwt)
        if json_out is not None:
            data = comparison_to_dict(comp)
            data["notes"] = notes
            data["flips"] = {f.task: {"metric": f.metric, "right_to_wrong": [x.sample_id for x in f.broken],
                                      "wrong_to_right": [x.sample_id for x in f.fixed]} for f in task_flips}
            if spreads is not None:
                data["noise_floor"] = {f"{t}/{m}": {"values": s.values, "spread": s.spread, "sd": s.sd}
                                       for (t, m), s in spreads.items()}
            if contam is not None:
                data["contamination"] = contam
            data["gate"] = {"config": gate.model_dump(mode="json"), "failures": failures}
            data["bwt"] = None if bwt is None else {"value": bwt.bwt, "runs": bwt.runs,
                                                    "tasks": {r.task: r.transfer for r in bwt.rows}}
            write_json(json_out, data)
        if tracking.report_to:
            from dataforge.track.report import report_comparison

            report_comparison(tracking, comparison_to_dict(comp), tuned[0], json_out)
        for line in failures:
            console.print("[bold red]gate:[/] " + escape(line))
        if failures:
            raise typer.Exit(1)
        if gate.rules or any(v is not None for v in (gate.max_regression, gate.max_forgetting,
                                                       gate.min_domain_gain, gate.min_bwt)):
            console.print("[green]gate passed[/]")

    @app.command(rich_help_panel=PANEL)
    def report(
        runs: list[Path] = typer.Argument(..., help="Results folders: the base first, then one or more tunes."),
        output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file; the Markdown goes beside it (.md)."),
        seed: int = typer.Option(1234, help="Bootstrap seed."),
        n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap replicates."),
        title: str | None = typer.Option(None, help="Report title."),
        series: str | None = typer.Option(None, help="History series for a backward-transfer section."),
        history_db: Path | None = typer.Option(None, "--history-db", help="History store."),
        correction: str | None = typer.Option(None, "--correction", help="Multiple-testing correction over all tasks x metrics: none, holm or bh (default: the suite gate's, else none)."),
        noise: list[Path] = typer.Option([], "--noise", help="A re-run of the base (`dataforge eval --noise-seed`): its spread is shown beside each delta. Repeatable."),
        contamination: Path | None = typer.Option(None, "--contamination", help="A build folder: score each task on the items its contamination.jsonl spans overlap and on the clean rest."),
        contamination_split: str | None = typer.Option(None, "--contamination-split", help="With --contamination: check n-grams shared with this split of the build (e.g. train) instead."),
        ngram: int = typer.Option(13, "--ngram", min=4, help="With --contamination: words in a shared span."),
    ) -> None:
        """A self-contained HTML report (plots embedded) and the same content as Markdown."""
        from dataforge.eval.report import build_report, write_report
        from dataforge.eval.results import load_results

        if len(runs) < 2:
            raise InputError("report needs a base results folder and at least one tuned one")
        method = _correction(correction)
        texts, mode, source = _build_texts(contamination, contamination_split, ngram) if contamination \
            else (None, "file", "")
        bwt = _bwt(load_results(runs[-1]), history_db, series) if series else None
        html, md = write_report(build_report(runs, seed=seed, n_boot=n_boot, bwt=bwt, title=title, correction=method,
                                             noise=noise, contamination=texts, contamination_mode=mode,
                                             contamination_source=source, ngram=ngram), output)
        Console().print(f"wrote {html} and {md}")

    @app.command(rich_help_panel=PANEL)
    def history(
        add: Path | None = typer.Option(None, "--add", help="Record this results folder (then show the history)."),
        label: str | None = typer.Option(None, help="With --add: the run's label (default: adapter or model name). Otherwise: show only this label."),
        series: str | None = typer.Option(None, help="With --add: the series of successive tunes it belongs to. Otherwise: show only this series, with backward transfer."),
        suite: str | None = typer.Option(None, help="Show only this suite."),
        task: list[str] = typer.Option([], "--task", help="Tasks to show (default all). Repeatable."),
        metric: str | None = typer.Option(None, help="Metric to show (default: each task's primary metric)."),
        db: Path | None = typer.Option(None, "--db", help="History store (default $DATAFORGE_HOME/history.sqlite)."),
    ) -> None:
        """Each tune's scores over time, from the local history store."""
        from dataforge.eval.compare import backward_transfer
        from dataforge.eval.history import list_runs, record_run

        console = Console()
        if add is not None:
            run_id = record_run(add, db, label=label, series=series)
            console.print(f"recorded {add} as run {run_id}")
            label = None
        runs = list_runs(db, label=label, series=series, suite=suite)
        if not runs:
            console.print("no recorded runs match")
            return
        tasks = task or sorted({t for r in runs for t in r.scores})
        console.print(_history_table(runs, tasks, metric))
        if series is not None and len(runs) > 1:
            bwt = backward_transfer(runs)
            if bwt.rows:
                console.print(f"backward transfer: BWT {_fmt(bwt.bwt, True)} ("
                              + ", ".join(f"{r.task} {_fmt(r.transfer, True)}" for r in bwt.rows) + ")")

    from dataforge.eval.metrics import GenerationScoring

    @app.command(rich_help_panel=PANEL, epilog=config_epilog(GenerationScoring, "Scoring keys (--config YAML, or --set KEY=VALUE)"))
    def score(
        predictions: Path = typer.Argument(..., help="jsonl, json, csv or parquet with prompt, prediction (or response) and reference (or target); or an lm-eval samples_<task>_<time>.jsonl of a generate_until task (--log_samples)."),
        column: list[str] = typer.Option([], "--column", "-c", help="Column mapping CANONICAL=YOURS (prompt, prediction, reference, finish_reason, sample_id). Repeatable."),
        config: Path | None = typer.Option(None, "--config", help="YAML with the scoring keys below."),
        set_: list[str] = typer.Option([], "--set", help="Override a scoring key: --set format=number. Repeatable."),
        task_name: str | None = typer.Option(None, "--task-name", help="Task name in the results folder (default: predictions, or the lm-eval task's name)."),
        lm_filter: str | None = typer.Option(None, "--filter", help="lm-eval samples: the filter whose responses to score (needed when the task ran several)."),
        tag: str = typer.Option("domain", help="domain or general."),
        output: Path | None = typer.Option(None, "--output", "-o", help="Results folder (default: runs/<file stem>.eval in the current directory)."),
        label: str | None = typer.Option(None, help="Run label (default: the file's stem)."),
        suite: str | None = typer.Option(None, help="Suite name; files scored with the same suite, task name and scoring compare with each other."),
        seed: int = typer.Option(1234, help="Bootstrap seed."),
        n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap replicates."),
        record: bool = typer.Option(True, "--history/--no-history", help="Record the run in the history store."),
        series: str | None = typer.Option(None, help="History series of successive tunes."),
        history_db: Path | None = typer.Option(None, "--history-db", help="History store."),
    ) -> None:
        """Score a file of model outputs with no model: metrics, taxonomy, results folder, history."""
        from dataforge.eval.history import record_run
        from dataforge.eval.lm_eval_io import is_lm_eval_samples, samples_task_name, score_lm_eval_samples
        from dataforge.eval.predictions import score_predictions
        from dataforge.eval.results import load_results

        data: dict = {}
        if config is not None:
            data = read_yaml_mapping(config)
        scoring = validate_config(GenerationScoring, apply_sets(data, parse_sets(set_)), str(config or "(flags)"))
        if is_lm_eval_samples(predictions):
            if column:
                raise ConfigError("--column does not apply to an lm-eval samples file (its fields are fixed)")
            out = score_lm_eval_samples(predictions, scoring, lm_filter, task_name, tag=tag, out=output, seed=seed,
                                        n_boot=n_boot, label=label, suite=suite)
            task_name = task_name or samples_task_name(predictions)
        else:
            if lm_filter is not None:
                raise ConfigError("--filter applies only to an lm-eval samples file (samples_<task>_<time>.jsonl)")
            task_name = task_name or "predictions"
            out = score_predictions(predictions, parse_columns(column), scoring, task_name=task_name, tag=tag,
                                    out=output, seed=seed, n_boot=n_boot, label=label, suite=suite)
        res = load_results(out)
        console = Console()
        entry = res.task(task_name)
        table = Table(title=f"{predictions} ({entry['n']} samples)")
        for col in ("metric", "value", "95 % CI"):
            table.add_column(col)
        for name, m in entry["metrics"].items():
            table.add_row(name, _fmt(m["value"]), _ci(m['ci_low'], m['ci_high']))
        console.print(table)
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in entry["labels"].items() if v))
        if entry.get("abstained"):
            console.print("could not judge (too short or unclear): "
                          + ", ".join(f"{k} {v}" for k, v in entry["abstained"].items()))
        if record:
            record_run(res, history_db, label=label, series=series)
        console.print(f"results -> {out}")

    @app.command("export-ab", rich_help_panel=PANEL)
    def export_ab_cmd(
        base: Path = typer.Argument(..., help="Results folder of the base model."),
        tuned: Path = typer.Argument(..., help="Results folder of the tuned model."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder for ab_sheet.csv, ab_sheet.html and ab_key.json."),
        seed: int = typer.Option(1234, help="Seed of the shuffle and of the side flips."),
        task: list[str] = typer.Option([], "--task", help="Generation tasks to include (default all). Repeatable."),
        max_items: int | None = typer.Option(None, "--max-items", min=1, help="Rate at most this many items (a seeded sample)."),
        reference: bool = typer.Option(True, "--reference/--no-reference", help="Show the reference answer to raters."),
    ) -> None:
        """A blind side-by-side sheet (CSV + HTML) for human raters; the key goes to a separate file."""
        from dataforge.eval.ab import export_ab

        out = export_ab(base, tuned, output, seed=seed, tasks=task or None, max_items=max_items,
                        show_reference=reference)
        Console().print(f"{out.n_items} items -> {out.sheet_csv} (rate here), {out.sheet_html} (read here); "
                        f"keep {out.key} from the raters")

    @app.command("import-ab", rich_help_panel=PANEL)
    def import_ab_cmd(
        ratings: list[Path] = typer.Argument(..., help="Filled-in ab_sheet.csv files, one per rater."),
        key: Path | None = typer.Option(None, "--key", help="ab_key.json written by export-ab (default: the one beside the first ratings file)."),
        seed: int = typer.Option(1234, help="Bootstrap seed."),
        n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap replicates."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
    ) -> None:
        """Win rates of the tuned model over the base, with confidence intervals."""
        from dataforge.eval.ab import import_ab
        from dataforge.util.atomic import write_json

        if key is None:
            key = ratings[0].parent / "ab_key.json"
            if not key.is_file():
                raise InputError("no ab_key.json beside the ratings; give the key that export-ab wrote with --key",
                                 file=str(ratings[0]))
        res = import_ab(ratings, key, seed=seed, n_boot=n_boot)
        table = Table(title=escape(f"{res.tuned} vs {res.base}: human preference ({', '.join(res.raters)})"))
        for col in ("scope", "items", "ratings", "tuned / base / tie / both bad", "win rate [95 % CI]", "decisive [Wilson CI]"):
            table.add_column(col, justify="left" if col == "scope" else "right", overflow="fold")
        for scope, w in [("all", res.overall), *res.per_task.items()]:
            table.add_row(scope, str(w.n_items), str(w.n_ratings), f"{w.tuned_wins} / {w.base_wins} / {w.ties} / {w.both_bad}",
                          f"{_fmt(w.win_rate)}\n{_ci(w.ci_low, w.ci_high)}",
                          f"{_fmt(w.decisive_win_rate)}\n{_ci(w.decisive_ci_low, w.decisive_ci_high)}")
        console = Console()
        console.print(table)
        console.print("win rate = (tuned wins + (ties + both bad)/2) / ratings; decisive = tuned wins / (wins + losses)")
        if res.unrated:
            console.print(f"[yellow]{res.unrated} item(s) left unrated[/]")
        if res.agreement is not None:
            console.print(f"rater agreement: {res.agreement:.1%} of rater pairs on shared items")
        if json_out is not None:
            write_json(json_out, res.to_dict())

"""lm-evaluation-harness output as a results folder: compare, gate and re-score what lm-eval wrote.

lm-eval (`--output_path OUT --log_samples`) writes `OUT/<model name, sanitized>/results_<timestamp>.json`
and, per task, `samples_<task>_<timestamp>.jsonl`: one line per document and filter, with the
document, the requests (`arguments`), the model's raw and filtered responses, the target, each
metric's per-document value, and sha256 hashes of the document (`doc_hash`), of the first request's
context (`prompt_hash`) and of the target (`target_hash`). That is everything a paired bootstrap
needs, so `as_results` turns one such run into the `Results` that `dataforge compare`, the gate and
the report read; the intervals are then computed exactly as for our own runs.

Pairing rules (stated, because they decide what a delta means):
- two lm-eval runs pair on `doc_hash`, the same document, so a change of prompt (few-shot count,
  chat template) is still compared item by item; lm-eval before 0.4.3 wrote no hashes, and then
  `doc_id` pairs them. The targets of paired documents must agree.
- an lm-eval run and a dataforge run pair on the prompt text, the only thing both record: our
  sample id is a hash of the context, so the lm-eval side is keyed by the same hash of its first
  request's context. The task names must match.

Only metrics that lm-eval aggregates as a mean of per-document numbers are paired (acc, acc_norm,
exact_match, ...). Corpus scores (bleu, chrf, ter over all documents) and perplexities of
`loglikelihood_rolling` tasks have no per-document value to resample and are left out, each named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.eval.results import Results, load_results, sample_hash, task_metrics
from dataforge.util.fingerprint import fingerprint
from dataforge.util.jsonl import iter_objects

SUITE_NAME = "lm-eval"
# lm-eval output types -> our task type with the same per-sample semantics (means of numbers).
TASK_TYPES = {"multiple_choice": "multiple_choice", "loglikelihood": "multiple_choice",
              "generate_until": "generation"}


@dataclass
class LmEvalOutput:
    """One lm-eval run: its results file, the parsed results, and each task's samples file."""

    results_file: Path
    results: dict
    samples: dict[str, Path]
    notes: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        cfg = self.results.get("config") or {}
        return str(self.results.get("model_name") or cfg.get("model_args") or cfg.get("model") or "lm-eval")


def _timestamp(name: str, suffix: str) -> str:
    return name[name.rfind("_") + 1:].removesuffix(suffix)


def _results_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("results_*.json") if f.is_file())


def find_lm_eval_output(path: str | Path) -> LmEvalOutput | None:
    """The lm-eval run at `path` (an `--output_path` folder, its model subfolder, or one
    results_*.json file), or None when `path` is not lm-eval output. A folder with several runs
    gives the latest, as lm-eval's own tools pick it; pass the results file to choose another."""
    p = Path(path)
    notes: list[str] = []
    if p.is_file():
        if p.suffix != ".json":
            return None
        chosen = p
    elif p.is_dir():
        if (p / "manifest.json").is_file():
            return None
        files = _results_files(p)
        if not files:
            models = sorted(d for d in p.iterdir() if d.is_dir() and _results_files(d))
            if len(models) > 1:
                raise InputError("holds lm-eval results of several models ("
                                 + ", ".join(d.name for d in models) + "); give one model's folder", file=str(p))
            if not models:
                return None
            files = _results_files(models[0])
        chosen = max(files, key=lambda f: _timestamp(f.name, ".json"))
        if len(files) > 1:
            notes.append(f"{chosen.parent}: {len(files)} lm-eval runs; using the latest, {chosen.name}")
    else:
        return None
    try:
        results = json.loads(chosen.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(chosen), line=exc.lineno) from None
    if not (isinstance(results, dict) and isinstance(results.get("results"), dict)):
        if p.is_file() and not p.name.startswith("results_"):
            return None
        raise InputError("not an lm-eval results file (no 'results' mapping)", file=str(chosen))
    stamp = _timestamp(chosen.name, ".json")
    tasks = list(results.get("configs") or {}) or [t for t in results["results"]
                                                    if not (results.get("group_subtasks") or {}).get(t)]
    samples = {}
    for task in tasks:
        f = chosen.parent / f"samples_{task}_{stamp}.jsonl"
        if not f.is_file():
            raise InputError(f"task '{task}' has no per-sample file {f.name} beside the results; lm-eval writes "
                             f"one only with --log_samples, and paired intervals need them", file=str(chosen))
        samples[task] = f
    return LmEvalOutput(chosen, results, samples, notes)


# ------------------------------------------------------------------------------------------- samples

def _context(row: dict, path: Path, line: int) -> str:
    """The first request's context: `arguments.gen_args_0.arg_0` as lm-eval saves it (a list of
    argument lists in the samples simple_evaluate returns)."""
    args = row.get("arguments")
    first = args.get("gen_args_0", {}).get("arg_0") if isinstance(args, dict) else \
        (args[0][0] if isinstance(args, list) and args and isinstance(args[0], list) and args[0] else None)
    if not isinstance(first, str):
        raise InputError("the sample has no request context", file=str(path), line=line, field="arguments")
    return first


def _response(row: dict, path: Path, line: int) -> str:
    """What a generate_until task scored: `filtered_resps[0]` (after the task's filters), else the raw
    `resps[0][0]`."""
    for name, value in (("filtered_resps", row.get("filtered_resps")),
                        ("resps", (row.get("resps") or [None])[0])):
        if isinstance(value, list) and value:
            text = value[0]
            if isinstance(text, str):
                return text
            raise InputError("holds loglikelihood scores, not generated text; only generate_until samples "
                             "can be re-scored", file=str(path), line=line, field=name)
    raise InputError("the sample has no response (filtered_resps or resps)", file=str(path), line=line)


def read_samples(path: Path) -> list[tuple[int, dict]]:
    rows = list(iter_objects(path))
    if not rows:
        raise InputError("the samples file is empty", file=str(path))
    for line, row in rows:
        for name in ("doc_id", "filter", "metrics"):
            if name not in row:
                raise InputError("not an lm-eval sample: the field is missing", file=str(path), line=line, field=name)
    return rows


def read_generations(path: str | Path, filter_name: str | None = None) -> list[dict]:
    """A generate_until task's samples as rows to score: the prompt (first request's context), the
    prediction (the filtered response), the reference (`target`), and lm-eval's doc_id and doc_hash.
    The sample id is left to the scorer, a hash of the prompt as in every results folder, so the
    re-scored run pairs with dataforge runs and other lm-eval runs on the same prompts. A task run
    with several filters needs `filter_name`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("lm-eval samples file does not exist", file=str(path))
    rows = read_samples(path)
    filters = sorted({r["filter"] for _, r in rows})
    if filter_name is None:
        if len(filters) > 1:
            raise InputError(f"holds the filters {filters}; choose one with --filter", file=str(path))
        filter_name = filters[0]
    elif filter_name not in filters:
        raise InputError(f"no filter '{filter_name}' (filters: {filters})", file=str(path))
    out = []
    for line, row in rows:
        if row["filter"] != filter_name:
            continue
        if "target" not in row:
            raise InputError("the sample has no target", file=str(path), line=line, field="target")
        out.append({"prompt": _context(row, path, line), "prediction": _response(row, path, line),
                    "reference": str(row["target"]), "doc_id": row["doc_id"], "doc_hash": row.get("doc_hash"),
                    "origin_line": line})
    return out


def is_lm_eval_samples(path: Path) -> bool:
    """A `--log_samples` file: named samples_*.jsonl, its first record holding doc_id and responses."""
    if not (path.name.startswith("samples_") and path.suffix == ".jsonl" and path.is_file()):
        return False
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "doc_id" in row and ("filtered_resps" in row or "resps" in row)


def score_lm_eval_samples(path: str | Path, scoring: Any, filter_name: str | None = None,
                          task_name: str | None = None, **kwargs: Any) -> Path:
    """Re-score a generate_until task's saved generations with our metrics into a results folder
    (`dataforge score samples_<task>_<ts>.jsonl`); the task keeps lm-eval's name unless renamed."""
    from dataforge.eval.predictions import score_rows

    path = Path(path)
    rows = read_generations(path, filter_name)
    return score_rows(rows, path, scoring, task_name or samples_task_name(path), source={
        "lm_eval_samples": True, "filter": filter_name or "the file's only filter"}, **kwargs)


def samples_task_name(path: Path) -> str:
    """lm-eval's own parse of `samples_<task>_<timestamp>.jsonl`."""
    name = path.name
    return name[name.find("_") + 1:name.rfind("_")] if name.startswith("samples_") else path.stem


# ------------------------------------------------------------------------------------------- results

def _pairable_metrics(task: str, cfg: dict, rows: list[tuple[int, dict]], notes: list[str]) -> list[str]:
    """Metrics lm-eval averages over documents and that are numbers on every row, in its order."""
    declared = [r["metric"] for r in cfg.get("metric_list") or [] if isinstance(r, dict) and "metric" in r]
    aggregation = {r["metric"]: r.get("aggregation") for r in cfg.get("metric_list") or []
                   if isinstance(r, dict) and "metric" in r}
    names = list(dict.fromkeys([*declared, *rows[0][1]["metrics"]]))
    keep = []
    for m in names:
        agg = aggregation.get(m, "mean")
        numeric = all(isinstance(r.get(m), (int, float)) for _, r in rows)
        if agg in ("mean", None) and numeric:
            keep.append(m)
        elif any(m in r for _, r in rows):
            why = f"aggregated as '{agg}'" if agg not in ("mean", None) else "not a number per document"
            notes.append(f"{task}: metric {m} is {why}, a corpus-level score with no per-document value; not compared")
    return keep


def _rows(samples: list[tuple[int, dict]], metrics: list[str], key: str, path: Path, output_type: str
          ) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for line, r in samples:
        context = _context(r, path, line)
        if key == "prompt":
            sid = sample_hash(context)
        else:
            sid = str(r["doc_hash"]) if r.get("doc_hash") else f"doc{r['doc_id']}"
        seen[sid] = seen.get(sid, 0) + 1
        if seen[sid] > 1:
            sid = f"{sid}#{seen[sid]}"
        row = {"sample_id": sid, "doc_id": r["doc_id"], "prompt": context, "target": r.get("target"),
               "target_hash": r.get("target_hash"), "prompt_hash": r.get("prompt_hash"), "origin_line": line,
               "metrics": {m: float(r[m]) for m in metrics}}
        if output_type == "generate_until":
            row["prediction"] = _response(r, path, line)
        out.append(row)
    return out


def as_results(run: LmEvalOutput, key: str = "doc", suite: dict | None = None, seed: int = 1234,
               n_boot: int = 1000) -> Results:
    """The run as a `Results`: one task per lm-eval task and filter (`task` for the usual single
    filter 'none', `task/filter` otherwise), tagged general, rows keyed by `key` ('doc' or 'prompt',
    see the module docstring). `suite` replaces the lm-eval suite identity when the run is paired
    with a dataforge run whose task names it shares."""
    metrics: dict[str, dict] = {}
    rows_by_task: dict[str, list[dict]] = {}
    for task, path in run.samples.items():
        cfg = (run.results.get("configs") or {}).get(task) or {}
        output_type = cfg.get("output_type", "multiple_choice")
        samples = read_samples(path)
        if output_type not in TASK_TYPES:
            run.notes.append(f"{task}: lm-eval output type '{output_type}' has no per-document metric to pair; "
                             f"not compared")
            continue
        if key == "doc" and not all(r.get("doc_hash") for _, r in samples):
            run.notes.append(f"{task}: {path.name} has no doc_hash (lm-eval < 0.4.3); samples paired by doc_id")
        by_filter: dict[str, list[tuple[int, dict]]] = {}
        for line, r in samples:
            by_filter.setdefault(str(r["filter"]), []).append((line, r))
        for flt, part in by_filter.items():
            name = task if len(by_filter) == 1 and flt == "none" else f"{task}/{flt}"
            names = _pairable_metrics(name, cfg, part, run.notes)
            if not names:
                continue
            rows = _rows(part, names, key, path, output_type)
            task_type = TASK_TYPES[output_type]
            rows_by_task[name] = rows
            metrics[name] = {"type": task_type, "tag": "general", "n": len(rows), "primary_metric": names[0],
                             "samples": str(path), "metrics": task_metrics(task_type, rows, seed, n_boot),
                             "config": cfg}
    suite = suite or {"name": SUITE_NAME, "fingerprint": fingerprint(SUITE_NAME), "gate": []}
    manifest = {"kind": "eval", "model": run.model_name, "label": Path(run.model_name.rstrip("/")).name,
                "adapter": None, "suite": suite, "lm_eval": {"results_file": str(run.results_file),
                                                             "version": run.results.get("lm_eval_version")},
                "run_id": fingerprint(str(run.results_file.resolve()), run.results.get("task_hashes") or {})}
    res = Results(run.results_file.parent, manifest, metrics)
    res._rows.update(rows_by_task)
    return res


def _check_targets(a: Results, b: Results) -> None:
    """Paired documents of two lm-eval runs must have the same target, else they scored other data."""
    for task in set(a.task_names) & set(b.task_names):
        theirs = {r["sample_id"]: r for r in b.rows(task)}
        for r in a.rows(task):
            other = theirs.get(r["sample_id"])
            if other is not None and r.get("target_hash") and r["target_hash"] != other.get("target_hash"):
                raise InputError(f"task '{task}', doc_id {r['doc_id']}: the target differs from that of the same "
                                 f"document in {b.task(task)['samples']} (line {other['origin_line']}); the runs did "
                                 f"not score the same data", file=a.task(task)["samples"], line=r["origin_line"])


def _check_mixed(ours: Results, theirs: Results, lm_path: Path) -> None:
    common = [t for t in ours.task_names if t in theirs.task_names]
    if not common:
        raise InputError(f"no task in common: the dataforge run {ours.path} (suite '{ours.suite_name}') has "
                         f"{ours.task_names}, the lm-eval run has {theirs.task_names}; name the suite's task as "
                         f"the lm-eval task to pair them", file=str(lm_path))
    for t in common:
        a, b = ours.task(t)["type"], theirs.task(t)["type"]
        if a != b:
            raise InputError(f"task '{t}' is a {a} task in {ours.path} but a {b} task in the lm-eval run; "
                             f"they cannot be paired", file=str(lm_path))


def _rescore_generations(ours: Results, theirs: Results, seed: int, n_boot: int) -> None:
    """lm-eval's generations scored with the dataforge task's own metrics, so both sides of a mixed
    generation comparison carry the same metric definitions."""
    from dataforge.config.base import validate_config
    from dataforge.eval.metrics import GenerationScoring, score_generation

    for t in theirs.task_names:
        if t not in ours.task_names or theirs.task(t)["type"] != "generation":
            continue
        cfg = ours.task(t).get("config") or {}
        # an eval task records its spec (scoring under `scoring`); a `dataforge score` run, the scoring
        scoring = validate_config(GenerationScoring, cfg["scoring"] if "scoring" in cfg else cfg,
                                  f"{ours.path}: task {t} config")
        rows = score_generation([{**r, "reference": str(r["target"])} for r in theirs.rows(t)], scoring)
        theirs._rows[t] = rows
        entry = theirs.metrics[t]
        entry["metrics"] = task_metrics("generation", rows, seed, n_boot)
        entry["primary_metric"] = ours.task(t).get("primary_metric") or entry["primary_metric"]


def load_any(path: str | Path) -> Results:
    """A dataforge results folder, or an lm-eval run read with doc-hash pairing."""
    run = find_lm_eval_output(path)
    return load_results(path) if run is None else as_results(run)


def load_pair(base: str | Path, tuned: str | Path, seed: int = 1234, n_boot: int = 1000
              ) -> tuple[Results, Results, list[str], str]:
    """Two runs to compare, each a dataforge results folder or lm-eval output, paired as the module
    docstring states: (base, tuned, notes on what was left out, what the samples were matched by)."""
    runs = [find_lm_eval_output(base), find_lm_eval_output(tuned)]
    paths = [Path(base), Path(tuned)]
    if runs[0] is None and runs[1] is None:
        return load_results(base), load_results(tuned), [], "prompt hash"
    if runs[0] is not None and runs[1] is not None:
        a, b = (as_results(r, "doc", seed=seed, n_boot=n_boot) for r in runs)
        if not set(a.task_names) & set(b.task_names):
            raise InputError(f"the two lm-eval runs have no task in common ({a.task_names} and {b.task_names})",
                             file=str(tuned))
        _check_targets(a, b)
        notes = [n for r in runs for n in r.notes]
        differ = sum(ra.get("prompt_hash") != rb.get("prompt_hash")
                     for t in set(a.task_names) & set(b.task_names)
                     for ra, rb in _paired(a.rows(t), b.rows(t)))
        if differ:
            notes.append(f"{differ} paired document(s) were prompted differently (few-shot examples, chat "
                         f"template or prompt changed between the runs)")
        return a, b, notes, "lm-eval doc_hash (doc_id where a file has no hashes)"
    i = 0 if runs[0] is not None else 1
    ours = load_results(paths[1 - i])
    theirs = as_results(runs[i], "prompt", suite=ours.manifest["suite"], seed=seed, n_boot=n_boot)
    _check_mixed(ours, theirs, paths[i])
    _rescore_generations(ours, theirs, seed, n_boot)
    pair = (theirs, ours) if i == 0 else (ours, theirs)
    return *pair, runs[i].notes, "prompt text (lm-eval's first request context)"


def _paired(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    by = {r["sample_id"]: r for r in b}
    return [(r, by[r["sample_id"]]) for r in a if r["sample_id"] in by]


# ---------------------------------------------------------------------------------------- export

def lm_eval_results(res: Results) -> dict[str, Any]:
    """A dataforge results folder in the shape of lm-eval's results_*.json: `results` with
    `<metric>,none` and `<metric>_stderr,none` (our bootstrap standard error), `versions`, `n-shot`,
    `higher_is_better`, `n-samples`, minimal `configs` and the run's `config`, so dashboards and
    lm-eval's own `make_table` read it."""
    m = res.manifest
    results, configs, versions, nshot, hib, counts = {}, {}, {}, {}, {}, {}
    for task in res.task_names:
        entry = res.task(task)
        out: dict[str, Any] = {"alias": task}
        for name, v in entry["metrics"].items():
            out[f"{name},none"] = v["value"]
            out[f"{name}_stderr,none"] = v["stderr"] if v["stderr"] == v["stderr"] else "N/A"
        results[task] = out
        cfg = entry.get("config") or {}
        versions[task] = m.get("format_version", 1)
        nshot[task] = int(cfg.get("shots", 0) or 0)
        hib[task] = {name: v["higher_is_better"] for name, v in entry["metrics"].items()}
        counts[task] = {"original": entry["n"], "effective": entry["n"]}
        configs[task] = {"task": task, "tag": [entry["tag"]], "output_type": _output_type(entry["type"]),
                         "num_fewshot": nshot[task], "repeats": 1,
                         "metric_list": [{"metric": name, "aggregation": "mean" if name not in ("bleu", "chrf")
                                          else name, "higher_is_better": v["higher_is_better"]}
                                         for name, v in entry["metrics"].items()],
                         "metadata": {"version": versions[task], "dataforge_type": entry["type"]}}
    model_args = f"pretrained={m.get('model')}" + (f",peft={m['adapter']}" if m.get("adapter") else "")
    options = m.get("options") or {}
    if options.get("dtype"):
        model_args += f",dtype={options['dtype']}"
    name = m.get("adapter") or m.get("model")
    return {
        "results": results, "group_subtasks": {t: [] for t in results}, "configs": configs, "versions": versions,
        "n-shot": nshot, "higher_is_better": hib, "n-samples": counts,
        "config": {"model": "dataforge", "model_args": model_args, "batch_size": options.get("batch_size"),
                   "limit": options.get("limit"), "bootstrap_iters": m.get("n_boot"), "random_seed": m.get("seed"),
                   "suite": m.get("suite", {}).get("name")},
        "date": m.get("created_at"), "model_name": name,
        "model_name_sanitized": str(name).replace("/", "__"),
        "dataforge_run_id": res.run_id,
    }


def _output_type(task_type: str) -> str:
    return {"multiple_choice": "multiple_choice", "generation": "generate_until",
            "perplexity": "loglikelihood_rolling"}.get(task_type, task_type)


def write_lm_eval_results(folder: str | Path) -> Path:
    """Write `<folder>/results.json` (lm-eval's layout) beside a results folder's own files."""
    from dataforge.util.atomic import write_json

    res = load_results(folder)
    out = Path(folder) / "results.json"
    write_json(out, lm_eval_results(res))
    return out

"""Whole-build throughput: dataforge's `run_build` against the peers' way of preparing the same data.

    .venv/bin/python benchmarks/bench_build.py --n 200000 --out /tmp/bench-build

Data: `make_alpaca(n)` (benchmarks/synthetic.py: 5 % exact copies, 5 % near copies with small edits,
true word-3-shingle Jaccard >= 0.85), written as one Alpaca jsonl file that both sides read.

dataforge: the real `run_build` (collect, clean, exact + near dedupe, split 90/5/5, alpaca template,
tokenize with the built-in tiny tokenizer, max_length 512, write the run folder). Per-step seconds
come from the manifest's `steps` (every stage); the write step, which is no stage, is timed by
wrapping `StepProgress.step`, the context every step runs in.

Baseline, in the same process on the same file, as the peers do it:
* load: `datasets.load_dataset("json", data_files=...)`;
* exact: axolotl's `_deduplicate_dataset`: iterate the rows, `sha256(str(row))` of (instruction,
  input, output), `dataset.select(unique_indices)`;
* near: datasketch `MinHash` (128 permutations, the same lowercased word 3-gram shingles as
  dataforge) inserted into `MinHashLSH(threshold=0.8)`, then one `query` per record; a candidate
  counts when its estimated Jaccard is >= 0.8, clusters are connected components, the first kept;
* split: `train_test_split` twice (90/5/5, seeded);
* template + tokenize: LLaMA-Factory's two maps: the Alpaca converter (`batched=False`, to
  `_prompt`/`_response`) and the supervised processor (`batched=True`): per example, the Alpaca
  prompt rendered and `tokenizer.encode`d apart from the response, input_ids = bos + prompt +
  response + eos, labels -100 on bos + prompt, cut with LLaMA-Factory's `infer_seqlen` at 512;
* write: `DatasetDict.save_to_disk`.
A sample of records present on both sides is checked for identical input_ids and labels.

Near-duplicate quality on the planted pairs (see bench_dedupe.score): recall = share of planted
(original, copy) pairs that end in the same cluster; precision = share of removed records whose kept
record is in their planted group. dataforge's clusters come from the run's clusters.jsonl.

Peak memory: resident set size sampled every 20 ms during each side (absolute, and above the
level before it), plus the process's ru_maxrss.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dedupe import datasketch_clusters, score  # noqa: E402
from memory import PeakRSS  # noqa: E402
from synthetic import make_alpaca  # noqa: E402

from dataforge.config.build import BuildConfig  # noqa: E402

THRESHOLD, NUM_PERM, SHINGLE, MAX_LEN, SEED = 0.8, 128, 3, 512, 1234
ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                 "Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
IGNORE_INDEX = -100


def load_text() -> str:
    return "load average (1/5/15 min) " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- data

def write_input(records: pl.DataFrame, path: Path) -> None:
    """Alpaca jsonl in record order, so that dataforge's ids (source:0:line) equal make_alpaca's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records.select("instruction", "input", "output").write_ndjson(path)


def resolve_chains(removed_to_kept: dict[str, str]) -> dict[str, str]:
    """An exact copy's keeper may itself be removed later as a near copy: follow to the survivor."""
    out = {}
    for r, k in removed_to_kept.items():
        seen = {r}
        while k in removed_to_kept and k not in seen:
            seen.add(k)
            k = removed_to_kept[k]
        out[r] = k
    return out


# ---------------------------------------------------------------- dataforge

@contextlib.contextmanager
def step_timer(times: dict[str, float]) -> Iterator[None]:
    """Record every pipeline step's wall time by wrapping StepProgress.step (nothing else changes)."""
    from dataforge.util import progress

    original = progress.StepProgress.step

    @contextlib.contextmanager
    def timed(self, name, total=None):
        t0 = time.perf_counter()
        with original(self, name, total) as s:
            yield s
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    progress.StepProgress.step = timed
    try:
        yield
    finally:
        progress.StepProgress.step = original


def run_dataforge(path: Path, out: Path) -> dict:
    from dataforge.data.pipeline import run_build

    cfg = BuildConfig.model_validate({
        "inputs": [{"path": str(path), "source": "synthetic", "format": "alpaca"}],
        "output": str(out), "seed": SEED,
        "template": {"name": "alpaca"},
        "dedupe": {"exact": True, "near": {"enabled": True, "shingle_size": SHINGLE, "num_perm": NUM_PERM,
                                           "threshold": THRESHOLD}},
        "decontaminate": {"enabled": False},
        "split": {"train": 0.9, "val": 0.05, "test": 0.05},
        "tokenize": {"enabled": True, "tokenizer": "tiny", "max_length": MAX_LEN},
    })
    times: dict[str, float] = {}
    with PeakRSS(0.02) as mem, step_timer(times):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_build(cfg, show_progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    manifest = result.manifest
    steps = []
    for s in manifest["steps"]:
        name = s["name"].replace("tokenize_", "tokenize ")
        secs, where = (s["seconds"], "manifest") if "seconds" in s else (times.get(name), "timer")
        steps.append({"name": s["name"], "in": s["in"], "out": s["out"], "seconds": secs, "from": where})
    steps.append({"name": "write", "in": None, "out": None, "seconds": times.get("write"), "from": "timer"})
    order = ["collect", "clean", "dedupe_exact", "dedupe_near", "split", "template", "tokenize", "write"]
    steps.sort(key=lambda s: order.index(s["name"]) if s["name"] in order else len(order))
    removed = {}
    with open(out / "clusters.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            removed[row["removed_id"]] = row["kept_id"]
    return {"wall": wall, "cpu": cpu, "mem": mem, "steps": steps, "removed": resolve_chains(removed),
            "splits": manifest["splits"], "n_read": manifest["steps"][0]["in"]}


# ---------------------------------------------------------------- baseline

def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def baseline_exact(ds):
    """axolotl's _deduplicate_dataset, keeping the keeper of each removed row for scoring."""
    seen: dict[str, int] = {}
    unique, removed = [], {}
    for idx, row in enumerate(ds.select_columns(["instruction", "input", "output"])):
        h = sha256(str(row))
        if h in seen:
            removed[idx] = seen[h]
        else:
            seen[h] = idx
            unique.append(idx)
    return ds.select(unique), removed


def baseline_near(ds):
    texts = ("\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
             for r in ds.select_columns(["instruction", "input", "output"]))
    removed = datasketch_clusters(texts, SHINGLE, NUM_PERM, THRESHOLD, SEED)
    return ds.select([x for x in range(len(ds)) if x not in removed]), removed


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's processor_utils.infer_seqlen."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def convert_alpaca(example: dict) -> dict:
    """LLaMA-Factory's AlpacaDatasetConverter, reduced to the fields this data has."""
    prompt = example["instruction"] + ("\n" + example["input"] if example["input"] else "")
    return {"_prompt": [{"role": "user", "content": prompt, "instruction": example["instruction"],
                         "input": example["input"]}],
            "_response": [{"role": "assistant", "content": example["output"]}], "_system": "", "_id": example["_id"]}


def make_supervised(tokenizer, prefix: list[int]):
    eos = tokenizer.eos_token_id

    def preprocess(examples: dict) -> dict:
        """LLaMA-Factory's SupervisedDatasetProcessor.preprocess_dataset with the Stanford Alpaca prompt."""
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "id": []}
        for prompt, response, rid in zip(examples["_prompt"], examples["_response"], examples["_id"], strict=True):
            user = prompt[0]
            text = (ALPACA_PROMPT if user["input"] else ALPACA_PROMPT_NO_INPUT).format(
                instruction=user["instruction"], input=user["input"])
            source_ids = prefix + tokenizer.encode(text, add_special_tokens=False)
            target_ids = tokenizer.encode(response[0]["content"], add_special_tokens=False) + [eos]
            s_len, t_len = infer_seqlen(len(source_ids), len(target_ids), MAX_LEN)
            source_ids, target_ids = source_ids[:s_len], target_ids[:t_len]
            input_ids = source_ids + target_ids
            out["input_ids"].append(input_ids)
            out["attention_mask"].append([1] * len(input_ids))
            out["labels"].append([IGNORE_INDEX] * s_len + target_ids)
            out["id"].append(rid)
        return out

    return preprocess


def run_baseline(path: Path, out: Path) -> dict:
    import datasets

    from dataforge.data.tokenize import special_prefix
    from dataforge.models import load_tokenizer

    cache = out / "hf-cache"
    times: dict[str, float] = {}
    with PeakRSS(0.02) as mem:
        t_all, c0 = time.perf_counter(), time.process_time()

        t0 = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
        ds = ds.add_column("_id", [f"synthetic:0:{i + 1}" for i in range(len(ds))])
        times["load"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        n0 = len(ds)
        ds, exact_removed = baseline_exact(ds)
        times["exact"] = time.perf_counter() - t0
        ids_after_exact = ds["_id"]

        t0 = time.perf_counter()
        ds, near_removed = baseline_near(ds)
        times["near"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        first = ds.train_test_split(test_size=0.1, seed=SEED)
        rest = first["test"].train_test_split(test_size=0.5, seed=SEED)
        splits = datasets.DatasetDict({"train": first["train"], "val": rest["train"], "test": rest["test"]})
        times["split"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tokenizer = load_tokenizer("tiny")
        prefix = special_prefix(tokenizer)
        preprocess = make_supervised(tokenizer, prefix)
        tokenized = {}
        for name, split in splits.items():
            aligned = split.map(convert_alpaca, batched=False, remove_columns=split.column_names,
                                load_from_cache_file=False)
            tokenized[name] = aligned.map(preprocess, batched=True, batch_size=1000,
                                          remove_columns=aligned.column_names, load_from_cache_file=False)
        tokenized = datasets.DatasetDict(tokenized)
        times["template + tokenize"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tokenized.save_to_disk(str(out / "tokenized"))
        times["write"] = time.perf_counter() - t0
        wall, cpu = time.perf_counter() - t_all, time.process_time() - c0

    ids = [f"synthetic:0:{i + 1}" for i in range(n0)]
    removed = {ids[r]: ids[k] for r, k in exact_removed.items()}
    removed.update({ids_after_exact[r]: ids_after_exact[k] for r, k in near_removed.items()})
    return {"wall": wall, "cpu": cpu, "mem": mem, "times": times, "removed": resolve_chains(removed),
            "tokenized": tokenized, "splits": {k: len(v) for k, v in tokenized.items()}}


def same_sequences(df_dir: Path, tokenized, k: int = 2000) -> tuple[int, int]:
    """How many of k records (kept on both sides) got identical input_ids and labels."""
    import datasets

    ours = datasets.load_from_disk(str(df_dir))
    where = {}
    for split, ds in ours.items():
        for i, rid in enumerate(ds["id"]):
            where[rid] = (split, i)
    theirs = tokenized["train"]
    rows = random.Random(SEED).sample(range(len(theirs)), min(k, len(theirs)))
    same = total = 0
    for row in theirs.select(rows):
        hit = where.get(row["id"])
        if hit is None:
            continue
        mine = ours[hit[0]][hit[1]]
        total += 1
        same += mine["input_ids"] == row["input_ids"] and mine["labels"] == row["labels"]
    return same, total


# ---------------------------------------------------------------- report

def warm_imports() -> None:
    """Import both sides' libraries before any timing, so neither pays the other's import cost."""
    import datasets
    import datasketch  # noqa: F401
    from transformers import AutoTokenizer  # noqa: F401  (lazy: this import pulls in torch)

    import dataforge.data.pipeline  # noqa: F401
    from dataforge.data import clean, collect, dedupe, split, templates, tokenize  # noqa: F401

    datasets.disable_progress_bars()


def quality(name: str, ids: list[str], removed: dict[str, str], planted: pl.DataFrame) -> None:
    s = score(ids, removed, planted)
    print(f"{name:<10} removed {s['removed']:,}  recall {s['recall']:.4f} (exact copies {s['recall_exact']:.4f}, "
          f"near copies {s['recall_near']:.4f})  precision {s['precision']:.4f}")
    print("           near recall by true Jaccard: " + ", ".join(
        f"{k}: {v:.3f} (n={c:,})" for k, (v, c) in s["by_jaccard"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="records (default 1,000,000)")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="records for the baseline (default: --n; 0 skips it). Fewer than --n: the baseline runs on "
                         "the first records of the same file and its time is extrapolated linearly (labelled so).")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-build"), help="work folder (its bench-* parts are replaced)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    n_base = args.n if args.baseline_n is None else min(args.baseline_n, args.n)

    print(f"start: {load_text()}; {os.cpu_count()} CPUs")
    for part in ("bench-input", "bench-dataforge", "bench-baseline"):
        shutil.rmtree(args.out / part, ignore_errors=True)
    t0 = time.perf_counter()
    records, planted = make_alpaca(args.n, seed=args.seed)
    path = args.out / "bench-input" / "alpaca.jsonl"
    write_input(records, path)
    ids = records["id"].to_list()
    print(f"data: {args.n:,} records ({path.stat().st_size / 2**20:,.0f} MiB jsonl) in {time.perf_counter() - t0:.1f} s; "
          f"planted {planted.filter(pl.col('kind') == 'exact').height:,} exact and "
          f"{planted.filter(pl.col('kind') == 'near').height:,} near copies")
    base_path = path
    if 0 < n_base < args.n:
        base_path = args.out / "bench-input" / f"alpaca.head{n_base}.jsonl"
        write_input(records.head(n_base), base_path)
    del records
    warm_imports()

    df = run_dataforge(path, args.out / "bench-dataforge")
    n = df["n_read"]
    print(f"\ndataforge run_build: {n:,} records, wall {df['wall']:.1f} s ({n / df['wall']:,.0f} rec/s end to end), "
          f"cpu {df['cpu']:.1f} s; {df['mem'].text()}; splits {df['splits']}")
    print(f"  {'step':<16}{'in':>10}{'out':>10}{'seconds':>10}{'rec/s':>12}  (source)")
    for s in df["steps"]:
        rec_in = s["in"] if s["in"] is not None else None
        secs = s["seconds"]
        rate = f"{rec_in / secs:,.0f}" if rec_in and secs else ""
        print(f"  {s['name']:<16}{rec_in if rec_in is not None else '':>10}{s['out'] if s['out'] is not None else '':>10}"
              f"{secs if secs is not None else float('nan'):>10.2f}{rate:>12}  ({s['from']})")
    quality("dataforge", ids, df["removed"], planted)

    if not n_base:
        print(f"\nbaseline skipped; end: {load_text()}; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
        return
    base = run_baseline(base_path, args.out / "bench-baseline")
    scale = args.n / n_base
    label = "" if scale == 1 else f" [EXTRAPOLATED x{scale:.2f} from {n_base:,} records]"
    print(f"\nbaseline (datasets + axolotl sha256 + datasketch + LLaMA-Factory maps): {n_base:,} records, wall "
          f"{base['wall']:.1f} s ({n_base / base['wall']:,.0f} rec/s end to end), cpu {base['cpu']:.1f} s; "
          f"{base['mem'].text()}; splits {base['splits']}")
    base_ids = ids[:n_base]
    sub = set(base_ids)
    quality("baseline", base_ids, base["removed"],
            planted.filter(pl.col("original_id").is_in(sub) & pl.col("copy_id").is_in(sub)))
    same, total = same_sequences(args.out / "bench-dataforge" / "tokenized", base["tokenized"])
    print(f"same input_ids and labels on both sides: {same:,} of {total:,} sampled records kept by both")

    secs = {s["name"]: s["seconds"] or 0.0 for s in df["steps"]}
    tok = secs["tokenize"]
    rows = [("load / collect", secs["collect"], base["times"]["load"]),
            ("clean", secs["clean"], 0.0),
            ("exact dedupe", secs["dedupe_exact"], base["times"]["exact"]),
            ("near dedupe", secs["dedupe_near"], base["times"]["near"]),
            ("split", secs["split"], base["times"]["split"]),
            ("template + tokenize", secs["template"] + tok, base["times"]["template + tokenize"]),
            ("write", secs["write"], base["times"]["write"])]
    rows.append(("other (setup, accounting)", df["wall"] - sum(r[1] for r in rows), base["wall"] - sum(r[2] for r in rows)))
    rows.append(("end to end", df["wall"], base["wall"]))
    print(f"\ncomparison at {args.n:,} records{label}")
    print(f"  {'stage':<27}{'dataforge s':>12}{'baseline s':>12}{'ratio':>9}")
    for name, ours, theirs in rows:
        theirs *= scale
        ratio = f"{theirs / ours:.1f}x" if ours > 0.005 and theirs > 0 else "-"
        print(f"  {name:<27}{ours:>12.2f}{theirs:>12.2f}{ratio:>9}")
    print(f"end to end: dataforge {df['wall'] / args.n * 1e6:.1f} us/record, baseline {base['wall'] / n_base * 1e6:.1f} "
          f"us/record -> {base['wall'] / n_base / (df['wall'] / args.n):.1f}x{label}  (cpu: "
          f"{base['cpu'] / n_base / (df['cpu'] / args.n):.1f}x)")
    print(f"end: {load_text()}; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()

"""Build cost against corpus size: records/s and peak RSS of the stream engine at 1M, 2M, 5M and 10M
synthetic records, the ray engine at 1M (when it is installed), and the local engine at 1M for the
fingerprint check, in one run.

    .venv/bin/python benchmarks/bench_scale.py --sizes 1000000,2000000,5000000,10000000 --out /tmp/bench-scale

Data: `make_alpaca` (benchmarks/synthetic.py: 5 % exact and 5 % near copies) in blocks of 1M records,
each block one Alpaca JSON-lines file generated with its own seed and cached in `--out`; a build of N
records reads the first N / 1M blocks as N / 1M inputs of one source, so every size reads the same
first records. The config is bench_build.py's (exact + near dedupe, split 90/5/5, alpaca template,
tiny tokenizer, max_length 512).

Each build runs in its own process, so one build's memory never counts against another: peak RSS is
the child's ru_maxrss (the high-water mark of resident memory, file-backed pages included), and
records/s is records read / wall seconds end to end (imports excluded, writing included). Results go
to `<out>/bench_scale.json` and a plot of microseconds and bytes of peak RSS per record against N to
`<out>/bench_scale.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BLOCK = 1_000_000
HERE = Path(__file__).resolve().parent


def block_file(out: Path, k: int, size: int) -> Path:
    """The k-th block of synthetic records, generated once (seed k) and kept for later runs."""
    path = out / "input" / f"block-{k:03d}-{size}.jsonl"
    if not path.exists():
        sys.path.insert(0, str(HERE))
        from synthetic import make_alpaca

        records, _ = make_alpaca(size, seed=k)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        records.select("instruction", "input", "output").write_ndjson(tmp)
        tmp.rename(path)
    return path


def inputs_for(out: Path, n: int) -> list[Path]:
    return [block_file(out, k, min(BLOCK, n - k * BLOCK)) for k in range(-(-n // BLOCK))]


def child(engine: str, n: int, out: Path, chunk_size: int | None) -> None:
    """One build in this process; prints a JSON line with its measurements."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from dataforge.config.build import BuildConfig
    from dataforge.data.engines import get_engine
    from dataforge.models import load_tokenizer

    load_tokenizer("tiny")   # imports (transformers) are not the build's cost
    run_dir = out / f"run-{engine}-{n}"
    cfg = BuildConfig.model_validate({
        "inputs": [{"path": str(p), "source": "synthetic", "format": "alpaca"} for p in inputs_for(out, n)],
        "output": str(run_dir), "seed": 1234, "template": {"name": "alpaca"},
        "dedupe": {"exact": True, "near": {"enabled": True, "shingle_size": 3, "num_perm": 128, "threshold": 0.8}},
        "decontaminate": {"enabled": False},
        "split": {"train": 0.9, "val": 0.05, "test": 0.05},
        "tokenize": {"enabled": True, "tokenizer": "tiny", "max_length": 512},
    })
    options = {"chunk_size": chunk_size} if chunk_size and engine == "stream" else {}
    t0, c0 = time.perf_counter(), time.process_time()
    result = get_engine(engine)(cfg, overwrite=True, show_progress=False, **options)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    read = sum(s["read"] for s in result.manifest["sources"].values())
    print(json.dumps({"engine": engine, "n": n, "read": read, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "records_per_s": round(read / wall), "peak_rss_gib": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "fingerprint": result.manifest["fingerprint"], "splits": result.manifest["splits"]}))


def measure(engine: str, n: int, out: Path, chunk_size: int | None) -> dict:
    inputs_for(out, n)  # generate the data before the measured process starts
    cmd = [sys.executable, __file__, "--child", engine, "--n", str(n), "--out", str(out)]
    if chunk_size:
        cmd += ["--chunk-size", str(chunk_size)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"engine": engine, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_1min_before"] = round(load, 2)
    row["us_per_record"] = round(row["wall_s"] / row["read"] * 1e6, 2)
    row["records_per_cpu_s"] = round(row["read"] / row["cpu_s"])
    row["rss_bytes_per_record"] = round(row["peak_rss_gib"] * 2**30 / row["read"])
    print(json.dumps(row), flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for engine in sorted({r["engine"] for r in rows}):
        pts = sorted((r["n"], r["us_per_record"], r["rss_bytes_per_record"]) for r in rows if r["engine"] == engine)
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=engine)
        ax2.plot([p[0] for p in pts], [p[2] / 1024 for p in pts], "o-", label=engine)
    for ax, label in ((ax1, "wall microseconds per record"), (ax2, "peak RSS KiB per record")):
        ax.set_xscale("log")
        ax.set_xlabel("records")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle("dataforge build: cost per record against corpus size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,2000000,5000000,10000000", help="stream engine sizes, comma-separated")
    ap.add_argument("--local-n", type=int, default=1_000_000, help="local engine size for the fingerprint check (0: skip)")
    ap.add_argument("--ray", action="store_true", help="also run the ray engine at --local-n records (local Ray runtime)")
    ap.add_argument("--chunk-size", type=int, default=None, help="stream engine records per chunk (default: its own)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-scale"), help="work folder (data blocks are kept)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.out, args.chunk_size)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"start: load average {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    for n in sorted(int(x) for x in args.sizes.split(",")):
        rows.append(measure("stream", n, args.out, args.chunk_size))
        if n == args.local_n:   # the fingerprint check first, before the long runs
            rows.append(measure("local", args.local_n, args.out, None))
            args.local_n_done = True
    if args.local_n and not getattr(args, "local_n_done", False):
        rows.append(measure("local", args.local_n, args.out, None))
    if args.ray:
        import importlib.util

        if importlib.util.find_spec("dataforge.data.engines.ray_engine") is None or importlib.util.find_spec("ray") is None:
            print("ray: skipped (dataforge.data.engines.ray_engine or ray is not installed)")
        else:
            rows.append(measure("ray", args.local_n or BLOCK, args.out, None))
    ok = [r for r in rows if "error" not in r]
    same = {r["engine"]: r["fingerprint"] for r in ok if r["n"] == (args.local_n or BLOCK)}
    summary = {"rows": rows, "cpus": os.cpu_count(), "load_end": os.getloadavg(),
               "same_fingerprint_at_local_n": len(set(same.values())) == 1 if len(same) > 1 else None,
               "fingerprints_at_local_n": same}
    (args.out / "bench_scale.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if ok:
        plot(ok, args.out / "bench_scale.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()

"""Reading cost of the collect stage on well-formed files: what strict parsing must not slow down.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_read.py --n 200000

Data: `make_alpaca(n, seed=0)` written as CSV by Python's csv.writer, once quoting only the cells
that need it (as pandas does) and once quoting every cell (as many exporters do: the worst case for
the quote check), and as JSON lines. Each file is read by
`collect` (reader + canonical records) `--repeat` times; the best wall and CPU times are reported with the number of
records that took the vectorized route. Run it against two checkouts (PYTHONPATH) to compare.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_alpaca  # noqa: E402

from dataforge.config.build import InputSpec, OnError  # noqa: E402
from dataforge.data.collect import collect  # noqa: E402


def write_files(rows: list[tuple[str, str, str]], folder: Path) -> dict[str, Path]:
    paths = {"csv": folder / "data.csv", "csv-quoted": folder / "quoted.csv", "jsonl": folder / "data.jsonl"}
    for kind, quoting in (("csv", csv.QUOTE_MINIMAL), ("csv-quoted", csv.QUOTE_ALL)):
        with open(paths[kind], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, quoting=quoting)
            w.writerow(["instruction", "input", "output"])
            w.writerows(rows)
    paths["jsonl"].write_text("".join(json.dumps(dict(zip(("instruction", "input", "output"), r, strict=True)),
                                                 ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return paths


def best_read(path: Path, repeat: int) -> tuple[float, float, dict]:
    """Best wall and best CPU seconds (all threads; steadier than wall time on a shared machine)."""
    wall, cpu, stats = float("inf"), float("inf"), {}
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = collect([InputSpec(path=str(path), source="s")], OnError.skip)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        stats = res.stats["inputs"][0]
    return wall, cpu, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = make_alpaca(args.n, seed=0)[0].select("instruction", "input", "output").rows()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in write_files(rows, Path(tmp)).items():
            wall, cpu, stats = best_read(path, args.repeat)
            quoted = path.read_bytes().count(b'"') if kind != "jsonl" else 0
            print(f"{kind:10s} {path.stat().st_size / 2**20:7.1f} MiB  {quoted:,} quote chars  {stats['read']:,} read  "
                  f"{stats['vectorized']:,} vectorized  best of {args.repeat}: {wall:.3f} s wall, {cpu:.3f} s CPU")


if __name__ == "__main__":
    main()

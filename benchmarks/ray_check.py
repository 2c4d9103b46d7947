"""Manual check: the Ray engine against the local engine on synthetic records (same fingerprint).

    PYTHONPATH=. python benchmarks/ray_check.py --n 200000 [--mix]

Two sources of synthetic Alpaca records (benchmarks/synthetic.py, planted exact and near copies),
built once by each engine; prints both fingerprints, kept counts and wall seconds. `--mix` adds
mix proportions that down-sample one source. (Up-sampling with mix.total is left out: the local
engine's accounting counts repeats as kept and refuses such builds today.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import make_alpaca  # noqa: E402

from dataforge.config.build import BuildConfig  # noqa: E402
from dataforge.data.engines import get_engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--mix", action="store_true")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray-check-"))
    records, _ = make_alpaca(args.n, seed=0)
    half = args.n // 2
    paths = []
    for i, part in enumerate((records.head(half), records.tail(args.n - half))):
        paths.append(tmp / f"part{i}.jsonl")
        part.select("instruction", "input", "output").write_ndjson(paths[-1])
    base = {"inputs": [{"path": str(p), "source": f"s{i}", "format": "alpaca"} for i, p in enumerate(paths)],
            "seed": 7, "template": {"name": "alpaca"}, "tokenize": {"tokenizer": "tiny", "max_length": 512},
            "split": {"train": 0.9, "val": 0.05, "test": 0.05}}
    if args.mix:
        base["mix"] = {"proportions": {"s0": 0.7, "s1": 0.3}}
    import ray

    ray.init(num_cpus=args.cpus, log_to_driver=False, configure_logging=False)
    for engine in ("local", "ray"):
        cfg = BuildConfig.model_validate({**base, "output": str(tmp / engine)})
        t0 = time.perf_counter()
        result = get_engine(engine)(cfg, show_progress=False)
        m = result.manifest
        print(f"{engine}: fingerprint {m['fingerprint']} splits {m['splits']} rejected {m['rejected']} "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Forgetting, measured: tuning on domain data alone raises perplexity on general text; mixing general
data into the train split raises it less.

The demo build (pipelines/build_alpaca.yaml) is built twice through the train config's `mix`: domain
only ({domain: 1, general: 0}) and mixed ({domain: 0.8, general: 0.2}). Both keep general records in
val, so `eval_general_loss` tracks general text during training. The same LoRA, steps and seeds run
on each; the table shows perplexity (exp of the token-weighted eval loss) of the base model and of
each tune, on domain and on general val text, averaged over seeds.

    python benchmarks/bench_forgetting.py                 # a few minutes on 2 CPU cores
    python benchmarks/bench_forgetting.py --steps 60 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MIXES = {"domain only": {"domain": 1.0, "general": 0.0}, "mixed 80/20": {"domain": 0.8, "general": 0.2}}


def pipeline(work: Path, max_length: int) -> Path:
    """The demo pipeline with its output in the work folder (decontamination off: no eval suite needed)."""
    import yaml

    from dataforge.config.base import read_yaml
    from dataforge.paths import DEMO_DATA_DIR, pipelines_dir

    raw = read_yaml(pipelines_dir() / "build_alpaca.yaml")
    for spec in raw["inputs"]:
        spec["path"] = str(DEMO_DATA_DIR / spec["path"].removeprefix("demo:"))
    raw["output"] = str(work / "build")
    raw["decontaminate"] = {"enabled": False}
    raw["tokenize"]["max_length"] = max_length
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def tune(pipe: Path, out: Path, mix: dict, args, seed: int) -> tuple[dict, dict]:
    """(eval losses at step 0, at the end) for one tune."""
    import json

    from dataforge.config.base import validate_config
    from dataforge.train.config import TrainConfig
    from dataforge.train.loop import train

    cfg = validate_config(TrainConfig, {
        "model": "tiny", "method": "lora", "seed": seed, "output": str(out),
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "data": {"path": str(pipe), "mix": mix},
        "train": {"learning_rate": args.lr, "max_steps": args.steps, "batch_size": 8, "warmup_steps": 2},
        "eval": {"at_start": True, "every_steps": None, "batch_size": 16},
        "checkpoint": {"every_steps": args.steps + 1},
    })
    train(cfg, show_progress=False)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    return evals[0], evals[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {}
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pipe = pipeline(work, args.max_length)
        for name, mix in MIXES.items():
            for seed in args.seeds:
                start, end = tune(pipe, work / f"{name.split()[0]}-{seed}", mix, args, seed)
                base = base or start
                results.setdefault(name, []).append(end)
                print(f"done {name}, seed {seed}", flush=True)

    def ppl(rows: list[dict], key: str) -> float:
        return math.exp(sum(r[key] for r in rows) / len(rows))

    print(f"\ntiny model, LoRA r=16, {args.steps} steps x batch 8, lr {args.lr}, seeds {args.seeds}")
    print(f"{'':<14}{'domain ppl':>12}{'general ppl':>13}{'general change':>16}")
    g0 = ppl([base], "eval_general_loss")
    print(f"{'base model':<14}{ppl([base], 'eval_domain_loss'):>12.2f}{g0:>13.2f}{'':>16}")
    for name, rows in results.items():
        g = ppl(rows, "eval_general_loss")
        print(f"{name:<14}{ppl(rows, 'eval_domain_loss'):>12.2f}{g:>13.2f}{(g / g0 - 1):>+16.1%}")


if __name__ == "__main__":
    main()

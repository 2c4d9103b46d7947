"""Running `dataforge train` as a user does, in a subprocess, and reading what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

CLI = [sys.executable, "-m", "dataforge"]
# One thread per process: on a small shared CI machine, oversubscribed threads make steps 5x slower.
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def write_config(path: Path, data: str | Path, output: Path, **sections) -> Path:
    """A small, fast train YAML; `sections` replace top-level keys (train=..., lora=...)."""
    cfg = {
        "model": "tiny", "method": "lora", "seed": 7, "output": str(output),
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1},
        "data": {"path": str(data)},
        "train": {"learning_rate": 2e-3, "max_steps": 12, "batch_size": 4, "warmup_steps": 2},
        "eval": {"every_steps": None, "at_start": False, "batch_size": 16},
        "checkpoint": {"every_steps": 4, "keep_last": 2},
    }
    cfg.update(sections)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def popen_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]


def read_manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def independent_eval_losses(model, val) -> dict[str, float]:
    """Token-weighted mean loss per source from the model's own `labels=` loss, one record at a time."""
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for row in val:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([row["labels"]])
            n = int((labels[0, 1:] != -100).sum())
            loss = model(input_ids=ids, labels=labels).loss.item()
            s = sums.setdefault(row["source"], [0.0, 0])
            s[0] += loss * n
            s[1] += n
    return {src: total / n for src, (total, n) in sums.items()}


def demo_pipeline(folder: Path, max_length: int = 128) -> Path:
    """A build pipeline YAML over the bundled demo data (domain: Alpaca, general: ShareGPT), in `folder`."""
    pipe = {
        "inputs": [{"path": "demo:domain.jsonl", "source": "domain", "format": "alpaca"},
                   {"path": "demo:general.jsonl", "source": "general", "format": "sharegpt"}],
        "output": str(folder / "runs" / "build"),
        "decontaminate": {"enabled": False},
        "split": {"train": 0.8, "val": 0.1, "test": 0.1},
        "tokenize": {"tokenizer": "tiny", "max_length": max_length},
    }
    path = folder / "pipe.yaml"
    path.write_text(yaml.safe_dump(pipe), encoding="utf-8")
    return path

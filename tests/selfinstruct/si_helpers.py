"""Shared helpers for the self-instruct run tests: a small config on the tiny model, and journal editing.

The tiny model's text is junk, so tests that need known completions write them into the run's
generation journal (`generations.jsonl`): the same replay path a resumed run takes feeds them through
the real parsing, filters, novelty check and writers.
"""

from __future__ import annotations

import json
from pathlib import Path

from dataforge.config.base import validate_config
from dataforge.selfinstruct.config import SelfInstructConfig

FIXTURES = Path(__file__).parent / "fixtures"


def small_config(out: Path, **overrides) -> SelfInstructConfig:
    data = {
        "seeds": str(FIXTURES / "seed_tasks.jsonl"),
        "output": str(out),
        "model": "tiny",
        "backend": {"name": "transformers", "device": "cpu"},
        "num_tasks": 2,
        "max_prompts": 1,
        "batch_size": 1,
        "prompt_style": "completion",
        "self_instruct": {
            "sampling": {"temperature": 0.7, "top_p": 0.5, "max_tokens": 24, "presence_penalty": 2.0,
                         "stop": ["\n\n", "\n16", "16.", "16 ."]},
            "classify_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 3, "stop": ["\n", "Task:"]},
            "instances_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "stop": ["Example 16", "Task:"]},
        },
        "alpaca": {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 24, "stop": ["\n20", "20."]}},
    }
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return validate_config(SelfInstructConfig, data)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def set_recorded(out: Path, key: str, texts: list[str]) -> None:
    """Replace the completions recorded under `key` (one per prompt), as if the model had written them."""
    path = out / "generations.jsonl"
    entries = read_jsonl(path)
    [entry] = [e for e in entries if e["key"] == key]
    assert len(entry["generations"]) == len(texts)
    for gens, text in zip(entry["generations"], texts, strict=True):
        gens[0].update(text=text, finish_reason="stop")
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def drop_recorded(out: Path, key: str) -> None:
    path = out / "generations.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in read_jsonl(path) if e["key"] != key))

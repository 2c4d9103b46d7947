"""Small preference build run folders for the training and eval tests, from the bundled demo pairs.

Rows follow the preference build's contract (`task: preference` in the manifest; `chosen_input_ids`,
`chosen_labels`, `rejected_input_ids`, `rejected_labels`, and for KTO `input_ids`, `labels`,
`kto_label`; labels -100 on the prompt). The prompt is rendered with the tiny tokenizer's chat
template and the completion ends with its eos token. Pairs go to val by a hash of their id, so the
split never depends on the order of the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dataforge.paths import DEMO_DATA_DIR

PAIRS_FILE = DEMO_DATA_DIR / "preference" / "pairs.jsonl"
IGNORE = -100


def demo_pairs(limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines()]
    return rows[:limit] if limit else rows


def in_val(pair_id: str, val_percent: int) -> bool:
    return int(hashlib.sha256(pair_id.encode()).hexdigest()[:8], 16) % 100 < val_percent


def encode(tokenizer, instruction: str, input_: str, completion: str, max_length: int) -> tuple[list, list]:
    """(input_ids, labels) of prompt + completion; truncation cuts the completion, never the prompt."""
    user = instruction.strip() + (f"\n\n{input_.strip()}" if input_ and input_.strip() else "")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                           tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion.strip() + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    ids = (p_ids + c_ids)[:max_length]
    return ids, ([IGNORE] * len(p_ids) + c_ids)[:max_length]


def make_preference_run(root: Path, pairs: list[dict] | None = None, *, max_length: int = 160,
                        val_percent: int = 20, name: str = "pref") -> Path:
    """A preference build run folder (train and val splits) in `root/name`."""
    import datasets

    from dataforge.models import load_tokenizer
    from dataforge.util.fingerprint import fingerprint

    tokenizer = load_tokenizer("tiny")
    pairs = demo_pairs() if pairs is None else pairs
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    for n, p in enumerate(pairs):
        c_ids, c_lab = encode(tokenizer, p["instruction"], p.get("input", ""), p["chosen"], max_length)
        r_ids, r_lab = encode(tokenizer, p["instruction"], p.get("input", ""), p["rejected"], max_length)
        row = {"id": p.get("id", str(n)), "prompt_id": p.get("id", str(n)), "source": p.get("source", "domain"),
               "chosen_input_ids": c_ids, "chosen_labels": c_lab, "rejected_input_ids": r_ids,
               "rejected_labels": r_lab}
        splits["val" if in_val(row["id"], val_percent) else "train"].append(row)
    run = root / name
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(
        str(run / "tokenized"))
    template = {"name": "chat", "sha256": None, "variants": False}
    (run / "template.json").write_text(json.dumps(template), encoding="utf-8")
    manifest = {"kind": "build", "task": "preference", "complete": True,
                "fingerprint": fingerprint(pairs, max_length, val_percent), "template": template,
                "sources": {"domain": {"by_split": {k: len(v) for k, v in splits.items()}}},
                "tokenize": {"tokenizer": "tiny", "max_length": max_length, "padding_side": "right",
                             "pad_to_multiple_of": None}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def make_kto_run(root: Path, pairs: list[dict] | None = None, *, max_length: int = 160, val_percent: int = 20) -> Path:
    """A KTO build run folder: each pair gives its chosen completion (desirable) and its rejected one."""
    import datasets

    from dataforge.models import load_tokenizer
    from dataforge.util.fingerprint import fingerprint

    tokenizer = load_tokenizer("tiny")
    pairs = demo_pairs() if pairs is None else pairs
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    for n, p in enumerate(pairs):
        pid = p.get("id", str(n))
        for text, label in ((p["chosen"], True), (p["rejected"], False)):
            ids, labels = encode(tokenizer, p["instruction"], p.get("input", ""), text, max_length)
            splits["val" if in_val(pid, val_percent) else "train"].append(
                {"id": f"{pid}:{int(label)}", "prompt_id": pid, "source": "domain", "input_ids": ids,
                 "labels": labels, "kto_label": label})
    run = root / "kto"
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(
        str(run / "tokenized"))
    manifest = {"kind": "build", "task": "preference", "complete": True,
                "fingerprint": fingerprint(pairs, max_length, val_percent, "kto"),
                "sources": {"domain": {"by_split": {k: len(v) for k, v in splits.items()}}},
                "tokenize": {"tokenizer": "tiny", "max_length": max_length, "padding_side": "right"}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run

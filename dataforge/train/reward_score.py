"""`dataforge score-reward`: score completions with a reward model trained by `--objective reward`.

The prompt is rendered as the preference build renders it (the tokenizer's chat template: one user
turn of instruction and input, then the generation prompt), the completion follows and ends with the
eos token, and the score is the scalar head's output at the last real token, as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

from dataforge.errors import InputError
from dataforge.train.export import read_run_manifest

IGNORE_INDEX = -100


def encode_completion(tokenizer, instruction: str, input_: str, completion: str, max_length: int) -> list[int]:
    """Token ids of prompt + completion as a preference build writes them; truncation cuts the completion."""
    user = instruction.strip() + (f"\n\n{input_.strip()}" if input_ and input_.strip() else "")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids += tokenizer(completion.strip() + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return ids[:max_length]


def load_reward_model(run: Path):
    """(model, tokenizer, max_length) of a finished reward run: base + scalar head + LoRA adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dataforge.models import resolve_model

    manifest = read_run_manifest(run)
    if manifest.get("config", {}).get("objective") != "reward":
        raise InputError("not a reward model run (train it with --objective reward)", file=str(run / "manifest.json"),
                         field="config.objective")
    weights = run / manifest["weights"]["path"]
    base_info = manifest["base_model"]
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model(base_info["path"] or base_info["name"]),
                                                              num_labels=1, dtype=torch.float32)
    model = base if manifest["weights"]["kind"] == "full_model" else PeftModel.from_pretrained(base, str(weights))
    tokenizer = AutoTokenizer.from_pretrained(str(weights))
    max_length = manifest["data"].get("max_length") or getattr(base.config, "max_position_embeddings", 2048)
    return model.eval(), tokenizer, int(max_length)


def score_ids(model, rows: list[list[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """Reward of each token row (the head's output at its last real token)."""
    import torch

    from dataforge.data.rows import collate

    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = collate([{"input_ids": r} for r in chunk], pad_id, "right")
            lengths = torch.tensor([len(r) for r in chunk])
            mask = (torch.arange(batch["input_ids"].shape[1])[None, :] < lengths[:, None]).long()
            out += model(input_ids=batch["input_ids"], attention_mask=mask).logits[:, 0].float().tolist()
    return out


def read_completions(path: Path, completion_field: str) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON ({exc.msg})", file=str(path), line=n) from None
        if not isinstance(row, dict):
            raise InputError("a record must be a JSON object", file=str(path), line=n)
        for key in ("instruction", completion_field):
            value = row.get(key)
            ok = isinstance(value, str) or (key == completion_field and isinstance(value, list)
                                             and all(isinstance(v, str) for v in value))
            if not ok:
                raise InputError(f"needs a text field '{key}'" + (" (or a list of texts)" if key == completion_field else ""),
                                 file=str(path), line=n, field=key)
        rows.append(row)
    return rows


def score_file(run: Path, path: Path, *, completion_field: str = "completion", best_of: bool = False,
               batch_size: int = 16) -> list[dict]:
    """Each record with `reward` (one completion) or `rewards` (a list); `best_of` also keeps the best one
    as `best` and its index as `best_index` (ties: the first)."""
    model, tokenizer, max_length = load_reward_model(run)
    rows = read_completions(path, completion_field)
    flat, owner = [], []
    for i, row in enumerate(rows):
        texts = row[completion_field] if isinstance(row[completion_field], list) else [row[completion_field]]
        for text in texts:
            flat.append(encode_completion(tokenizer, row["instruction"], row.get("input") or "", text, max_length))
            owner.append(i)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = score_ids(model, flat, pad, batch_size)
    per_row: list[list[float]] = [[] for _ in rows]
    for i, s in zip(owner, scores, strict=True):
        per_row[i].append(round(s, 6))
    out = []
    for row, s in zip(rows, per_row, strict=True):
        new = dict(row)
        if isinstance(row[completion_field], list):
            new["rewards"] = s
            if best_of and s:
                best = max(range(len(s)), key=lambda k: s[k])
                new["best_index"], new["best"] = best, row[completion_field][best]
        else:
            new["reward"] = s[0]
        out.append(new)
    return out

"""Preference training data: a build run folder with `task: preference`, and batches of pairs.

The build writes, per split, `chosen_input_ids`/`chosen_labels` and `rejected_input_ids`/
`rejected_labels` (labels -100 on the prompt) for pairs, and `input_ids`/`labels`/`kto_label` for KTO
completions. A pair batch stacks the chosen rows over the rejected rows, so one forward pass scores
both, as TRL does; the rows share `Batch` and `batch_from_rows` with SFT training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.errors import InputError
from dataforge.train.data import IGNORE_INDEX, Batch, TrainData, batch_from_rows

PAIR_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
KTO_COLUMNS = ("input_ids", "labels", "kto_label")
VAL_SPLITS = ("val", "validation")


def load_preference_run(run_dir: Path, objective: str) -> TrainData:
    """Open a preference build and check the columns `objective` (dpo, reward or kto) trains on."""
    import datasets

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a build run folder (no manifest.json)", file=str(run_dir), field="data.path")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("kind") != "build" or not manifest.get("complete"):
        raise InputError("manifest.json is not a complete build", file=str(manifest_path))
    if manifest.get("task") != "preference":
        raise InputError(f"objective {objective} needs a preference build (task: preference); this build's task "
                         f"is {manifest.get('task', 'sft')!r}", file=str(manifest_path), field="task")
    tok_dir = run_dir / "tokenized"
    if not tok_dir.is_dir():
        raise InputError("the build has no tokenized/ folder", file=str(run_dir))
    dd = datasets.load_from_disk(str(tok_dir))
    if "train" not in dd or dd["train"].num_rows == 0:
        raise InputError("the train split is empty", file=str(tok_dir))
    needed = (KTO_COLUMNS if objective == "kto" else PAIR_COLUMNS) + ("source",)
    val_name = next((s for s in VAL_SPLITS if s in dd and dd[s].num_rows), None)
    for split in ("train", val_name):
        if split is None:
            continue
        missing = [c for c in needed if c not in dd[split].column_names]
        if missing:
            raise InputError(f"split '{split}' lacks column(s) {', '.join(missing)} needed by objective {objective}",
                             file=str(tok_dir), field=missing[0])
    template_path = run_dir / "template.json"
    template = json.loads(template_path.read_text(encoding="utf-8")) if template_path.is_file() else {}
    tok = manifest.get("tokenize") or {}
    return TrainData(run_dir=run_dir, train=dd["train"], val=dd[val_name] if val_name else None, manifest=manifest,
                     template=template, packed=False, pad_to_multiple_of=tok.get("pad_to_multiple_of"))


def pair_lengths(dataset) -> np.ndarray:
    """Tokens per pair (chosen + rejected): what length grouping sorts on."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")
    return (pc.list_value_length(table["chosen_input_ids"]).to_numpy()
            + pc.list_value_length(table["rejected_input_ids"]).to_numpy()).astype(np.int64)


class _CountsOfBatch:
    """The token counts the train loop logs, read from the padded batch the loss runs on."""

    batch: Batch

    @property
    def tokens(self) -> int:
        return self.batch.tokens

    @property
    def trained_tokens(self) -> int:
        return self.batch.trained_tokens

    @property
    def positions(self) -> int:
        return self.batch.positions


@dataclass
class PairBatch(_CountsOfBatch):
    """Chosen rows [0, pairs) and rejected rows [pairs, 2 * pairs) of one padded batch."""

    batch: Batch
    pairs: int
    sources: list[str]


def pair_batch_from_rows(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None) -> PairBatch:
    features = ([{"input_ids": r["chosen_input_ids"], "labels": r["chosen_labels"]} for r in rows]
                + [{"input_ids": r["rejected_input_ids"], "labels": r["rejected_labels"]} for r in rows])
    batch = batch_from_rows(features, pad_id, pad_to_multiple_of, packed=False)
    return PairBatch(batch, len(rows), [r.get("source", "") for r in rows])


def _rows(dataset, indices, columns) -> list[dict]:
    cols = [c for c in columns if c in dataset.column_names]
    data = dataset.select_columns(cols)[list(map(int, indices))]
    return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]


def make_pair_batch(dataset, indices, pad_id: int, pad_to_multiple_of: int | None) -> PairBatch:
    return pair_batch_from_rows(_rows(dataset, indices, PAIR_COLUMNS + ("source",)), pad_id, pad_to_multiple_of)


@dataclass
class KtoBatch(_CountsOfBatch):
    """Labelled completions, plus mismatched rows (prompt i with completion i+1) for KTO's KL estimate."""

    batch: Batch
    kl_batch: Batch
    desirable: Any                  # bool tensor [rows]
    sources: list[str]

    @property
    def pairs(self) -> int:         # completions, counted like pairs by the step's normalization
        return len(self.sources)


def _split_prompt(ids: list[int], labels: list[int]) -> int:
    """Where the completion starts: the first trained label."""
    for i, lab in enumerate(labels):
        if lab != IGNORE_INDEX:
            return i
    return len(ids)


def kto_batch_from_rows(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None) -> KtoBatch:
    import torch

    batch = batch_from_rows([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows], pad_id,
                            pad_to_multiple_of, packed=False)
    cuts = [_split_prompt(r["input_ids"], r["labels"]) for r in rows]
    kl_rows = []
    for i, r in enumerate(rows):
        j = (i + 1) % len(rows)
        completion = list(rows[j]["input_ids"][cuts[j]:])
        kl_rows.append({"input_ids": list(r["input_ids"][:cuts[i]]) + completion,
                        "labels": [IGNORE_INDEX] * cuts[i] + completion})
    kl_batch = batch_from_rows(kl_rows, pad_id, pad_to_multiple_of, packed=False)
    desirable = torch.tensor([bool(r["kto_label"]) for r in rows])
    return KtoBatch(batch, kl_batch, desirable, [r.get("source", "") for r in rows])


def make_kto_batch(dataset, indices, pad_id: int, pad_to_multiple_of: int | None) -> KtoBatch:
    return kto_batch_from_rows(_rows(dataset, indices, KTO_COLUMNS + ("source",)), pad_id, pad_to_multiple_of)

"""Training data: a build run folder, or a pipeline YAML built first through the build cache.

Training never tokenizes or mixes on its own: mixing and packing are build steps, so the dataset a
model was tuned on is always a build run folder with a manifest and a fingerprint. This module
checks that folder's contract (columns, vocabulary) and turns records into padded batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.config.build import BuildConfig
from dataforge.errors import ConfigError, InputError
from dataforge.train.config import DataSection
from dataforge.util.fingerprint import fingerprint

REQUIRED_COLUMNS = {"train": ("input_ids", "labels"), "val": ("input_ids", "labels", "source")}
IGNORE_INDEX = -100


@dataclass
class TrainData:
    run_dir: Path
    train: Any                      # datasets.Dataset
    val: Any | None                 # datasets.Dataset, one record per row (never packed)
    manifest: dict
    template: dict
    packed: bool
    pad_to_multiple_of: int | None

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def tokenizer(self) -> str:
        return self.manifest.get("tokenize", {}).get("tokenizer", "")


def _is_pipeline_yaml(path: Path) -> bool:
    return path.is_file() and path.suffix in (".yaml", ".yml")


def resolve_build(cfg: DataSection, *, show_progress: bool = True) -> Path:
    """The build run folder to train on; a pipeline YAML is built (or found up to date) first.

    When the train config overrides the pipeline's mix or packing, the build goes to a sibling
    folder named by the overrides (`runs/build-mix-1a2b3c4d`), so it never overwrites the
    pipeline's own run, and a second training with the same mix reuses it whole.
    """
    path = Path(cfg.path)
    overrides = {k: v for k, v in (("mix", cfg.mix), ("pack", cfg.pack)) if v is not None}
    if path.is_dir():
        if overrides:
            raise ConfigError(f"data.{next(iter(overrides))}: {path} is an already built run folder; "
                              "mixing and packing need the pipeline YAML it was built from")
        return path
    if not _is_pipeline_yaml(path):
        raise InputError("neither a build run folder nor a pipeline YAML (.yaml)", file=str(path), field="data.path")

    from dataforge.config.base import read_yaml_mapping, validate_config
    from dataforge.data.pipeline import run_build

    raw = read_yaml_mapping(path)
    if cfg.mix is not None:
        raw.setdefault("mix", {})["proportions"] = cfg.mix
    if cfg.pack is not None:
        raw.setdefault("tokenize", {})["pack"] = cfg.pack
    if overrides:
        base = raw.get("output", BuildConfig.model_fields["output"].default)
        raw["output"] = f"{base}-{'-'.join(overrides)}-{fingerprint(overrides)[:8]}"
    build_cfg = validate_config(BuildConfig, raw, str(path))
    if not build_cfg.tokenize.enabled:
        raise ConfigError("tokenize.enabled: training needs a tokenized build", str(path))
    result = run_build(build_cfg, base_dir=path.resolve().parent, show_progress=show_progress)
    return result.run_dir


def load_build_run(run_dir: Path) -> TrainData:
    """Open a build run folder and check the columns training relies on."""
    import json

    import datasets

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a build run folder (no manifest.json)", file=str(run_dir), field="data.path")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("kind") != "build" or not manifest.get("complete"):
        raise InputError("manifest.json is not a complete build", file=str(manifest_path))
    tok_dir = run_dir / "tokenized"
    if not tok_dir.is_dir():
        raise InputError("the build has no tokenized/ folder; build with tokenize.enabled: true", file=str(run_dir))
    dd = datasets.load_from_disk(str(tok_dir))
    if "train" not in dd or dd["train"].num_rows == 0:
        raise InputError("the train split is empty", file=str(tok_dir))
    for split in ("train", "val"):
        if split in dd:
            missing = [c for c in REQUIRED_COLUMNS[split] if c not in dd[split].column_names]
            if missing:
                raise InputError(f"split '{split}' lacks column(s) {', '.join(missing)}", file=str(tok_dir),
                                 field=missing[0])
    template_path = run_dir / "template.json"
    template = json.loads(template_path.read_text(encoding="utf-8")) if template_path.is_file() else {}
    tok = manifest.get("tokenize") or {}
    val = dd["val"] if "val" in dd and dd["val"].num_rows else None
    return TrainData(run_dir=run_dir, train=dd["train"], val=val, manifest=manifest, template=template,
                     packed="position_ids" in dd["train"].column_names,
                     pad_to_multiple_of=tok.get("pad_to_multiple_of"))


def check_vocabulary(data: TrainData, model_name: str, tokenizer, embedding_rows: int) -> None:
    """Refuse data tokenized for another vocabulary: its ids would train the wrong embeddings."""
    from dataforge.models import load_tokenizer, resolve_model

    built_with = data.tokenizer
    if built_with and resolve_model(built_with) != resolve_model(model_name):
        if load_tokenizer(built_with).get_vocab() != tokenizer.get_vocab():
            raise InputError(f"the data was tokenized with '{built_with}', whose vocabulary differs from the "
                             f"model '{model_name}'; rebuild with tokenize.tokenizer: {model_name}",
                             file=str(data.run_dir / "manifest.json"), field="tokenize.tokenizer")
    import pyarrow.compute as pc

    top = pc.max(pc.list_flatten(data.train.with_format("arrow")["input_ids"])).as_py()
    if top >= embedding_rows:
        raise InputError(f"token id {top} is outside the model's {embedding_rows}-row embedding",
                         file=str(data.run_dir / "tokenized"), field="input_ids")


def sequence_lengths(dataset) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)


@dataclass
class Batch:
    """Model inputs plus the token counts behind the throughput and padding figures."""

    inputs: dict                    # input_ids, attention_mask or position_ids (packed)
    shift_labels: Any               # labels[t] is the target of logits[t]; -100 where nothing is learned
    sources: list[str]
    tokens: int                     # real (non-pad) tokens
    positions: int                  # batch size x padded length

    @property
    def trained_tokens(self) -> int:
        return int((self.shift_labels != IGNORE_INDEX).sum())


def make_batch(dataset, indices, pad_id: int, pad_to_multiple_of: int | None, packed: bool) -> Batch:
    """The batch of records `indices` of a tokenized split (a datasets.Dataset); see `batch_from_rows`."""
    columns = [c for c in ("input_ids", "labels", "position_ids", "source") if c in dataset.column_names]
    rows = dataset.select_columns(columns)[list(map(int, indices))]
    features = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    return batch_from_rows(features, pad_id, pad_to_multiple_of, packed)


def batch_from_rows(features: list[dict], pad_id: int, pad_to_multiple_of: int | None, packed: bool) -> Batch:
    """Collate rows with the build's `collate` and align labels with the logits that predict them.

    Packed rows carry `position_ids` that restart at 0 for each packed record; the model is then
    given no attention mask, which makes transformers build a block-diagonal causal mask from the
    position ids, and the target across a record boundary is masked so no record learns to predict
    the start of the next one.
    """
    import torch

    from dataforge.data.rows import collate

    lengths = torch.tensor([len(f["input_ids"]) for f in features])
    batch = collate(features, pad_id, "right", pad_to_multiple_of)
    input_ids, labels = batch["input_ids"], batch["labels"]
    shift = torch.full_like(labels, IGNORE_INDEX)
    shift[:, :-1] = labels[:, 1:]
    inputs = {"input_ids": input_ids}
    if packed:
        position_ids = batch["position_ids"]
        shift[:, :-1][position_ids[:, 1:] == 0] = IGNORE_INDEX
        inputs["position_ids"] = position_ids
    else:
        inputs["attention_mask"] = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return Batch(inputs=inputs, shift_labels=shift, sources=[f["source"] for f in features if "source" in f],
                 tokens=int(lengths.sum()), positions=input_ids.numel())

"""Token rows as the build writes them and training reads them, with no polars: the label that
means "not trained", padding rows into a batch, and gathering ranges of flat token arrays.

Training and the packing step need only these, so they live apart from the build's polars stages,
and a machine without polars (the offline GPU check, `make gpu-check`) can train on packed rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dataforge.errors import ConfigError

IGNORE_INDEX = -100


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the concatenated ranges [starts[i], starts[i] + lengths[i]), in order."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    # int32 when the indices fit: numpy's repeat and arange then run several times faster.
    fits = total < 2**31 and (not len(starts) or int((starts + lengths).max()) < 2**31)
    dtype = np.int32 if fits else np.int64
    return np.repeat((starts - (ends - lengths)).astype(dtype), lengths.astype(dtype)) + np.arange(total, dtype=dtype)


_PAD_VALUES = {"attention_mask": 0, "labels": IGNORE_INDEX, "position_ids": 0}


def collate(features: Sequence[Mapping[str, Any]], tokenizer_or_pad_id: Any, padding_side: str = "right",
            pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """Pad a batch of unpadded sequences into long tensors.

    Pads input_ids with the pad id (the eos id when the tokenizer has no pad token: padded positions
    are excluded from attention and loss, so the id itself never matters), attention_mask with 0,
    labels with -100 and position_ids with 0. Columns that are not model inputs (source, id) are
    left out. Packed batches (with position_ids) get no attention_mask: called with
    `use_cache=False`, transformers then builds a block-diagonal causal mask from the restarting
    position_ids, so packed records never attend to each other (see dataforge.data.pack).
    """
    import torch

    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    pad_id = tokenizer_or_pad_id if isinstance(tokenizer_or_pad_id, int) else _pad_id(tokenizer_or_pad_id)
    packed = "position_ids" in features[0]
    keys = [k for k in ("input_ids", "attention_mask", "labels", "position_ids") if k in features[0]]
    if packed and "attention_mask" in keys:
        keys.remove("attention_mask")
    rows = {k: [np.asarray(f[k]) for f in features] for k in keys}
    lengths = [len(x) for x in rows["input_ids"]]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    out = {}
    for k in keys:
        arr = np.full((len(features), width), pad_id if k == "input_ids" else _PAD_VALUES[k], dtype=np.int64)
        for i, x in enumerate(rows[k]):
            if padding_side == "right":
                arr[i, :len(x)] = x
            else:
                arr[i, width - len(x):] = x
        out[k] = torch.from_numpy(arr)
    return out


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError(f"tokenize.tokenizer: tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' has "
                          "neither a pad nor an eos token; pass a pad id to collate")
    return int(pad)

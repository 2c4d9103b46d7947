"""Resumable checkpoints that a kill -9 cannot corrupt.

A checkpoint holds what an uninterrupted run would still have in memory: the trainable weights,
the optimizer and scheduler states, every process's RNG states (dropout) and the step count; the
data position follows from the step (see `batching`). It is written by `accelerator.save_state`
into a hidden temporary folder, completed with `trainer_state.json`, and only then renamed to
`checkpoint-<step>`; a folder with that name is therefore always whole. Frozen base weights are
left out (a LoRA checkpoint of a 7B model is megabytes, not gigabytes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from dataforge.errors import StateError
from dataforge.util import atomic

STATE_FILE = "trainer_state.json"
ADAPTER_DIR = "adapter"           # the checkpoint's weights as a peft adapter folder
_NAME = re.compile(r"^checkpoint-(\d{8})$")


def only_trainable_weights(models, weights, output_dir) -> None:
    """accelerate save-state hook: keep just the parameters being trained in each saved state dict."""
    for model, state in zip(models, weights, strict=False):
        keep = {name for name, p in model.named_parameters() if p.requires_grad}
        for key in [k for k in state if k not in keep]:
            del state[key]


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator, root: Path, step: int, trainer_state: dict, keep_last: int,
                    weights: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint `step` atomically (every process must call this) and prune old ones.
    `weights(folder)`, when given, writes the checkpoint's loadable adapter into `ADAPTER_DIR`, so
    `dataforge eval --adapter 'run/checkpoints/*'` scores every checkpoint."""
    final = root / f"checkpoint-{step:08d}"
    tmp = root / f".checkpoint-{step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if weights is not None:
        weights(tmp / ADAPTER_DIR)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic.write_json(tmp / STATE_FILE, trainer_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, model) -> dict:
    """Restore a checkpoint into the prepared model/optimizer/scheduler; returns its trainer state.

    The saved weights must be exactly the model's trainable parameters: a checkpoint from another
    method or model would otherwise load partially without a word.
    """
    from accelerate.utils import DistributedType
    from safetensors import safe_open

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        accelerator.load_state(str(path))  # sharded formats: accelerate checks them itself
        return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    saved: set[str] = set()
    for f in sorted(path.glob("model*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            saved.update(st.keys())
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if saved != expected:
        missing, extra = sorted(expected - saved)[:3], sorted(saved - expected)[:3]
        raise StateError(f"{path} does not match this model (missing {missing}, unexpected {extra}); "
                         "it was written by a different method or base model")
    accelerator.load_state(str(path), strict=False)
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))

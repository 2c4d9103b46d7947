"""`dataforge export`: turn a finished run into something to ship.

`--merge` folds the adapter into the base weights (`merge_and_unload`) and writes a plain model
folder for `AutoModelForCausalLM`. A QLoRA adapter is merged into the full-precision base, as is
usual: the 4-bit weights it was trained against are a rounding of those. Without `--merge` the
adapter is copied with the tokenizer and template, to be loaded over the base model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dataforge.errors import ConfigError, InputError, StateError
from dataforge.train.outputs import MANIFEST_FILE
from dataforge.train.save import TEMPLATE_FILE
from dataforge.util import atomic
from dataforge.util.fingerprint import library_versions, sha256_tree

DTYPES = ("float32", "bfloat16", "float16")


def read_run_manifest(run: Path) -> dict:
    path = run / MANIFEST_FILE
    if not path.is_file():
        raise InputError("not a dataforge train run (no manifest.json)", file=str(run))
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("kind") != "train":
        raise InputError(f"manifest kind is {manifest.get('kind')!r}, not 'train'", file=str(path), field="kind")
    if not manifest.get("complete"):
        raise InputError("the run did not finish; resume it with `dataforge train --resume` first", file=str(path))
    return manifest


def export_run(run: Path, output: Path, *, merge: bool, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write the merged model (or the adapter) of `run` to `output`, atomically, with a manifest."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    manifest = read_run_manifest(run)
    weights = run / manifest["weights"]["path"]
    kind = manifest["weights"]["kind"]
    if output.exists() and not overwrite:
        raise StateError(f"{output} exists; pass --overwrite to replace it")
    with atomic.atomic_path(output, is_dir=True) as tmp:
        if merge:
            _write_merged(manifest, weights, kind, tmp, dtype)
        else:
            if kind == "full_model":
                raise InputError("a full fine-tune has no adapter; use --merge to write the model", file=str(run))
            shutil.copytree(weights, tmp, dirs_exist_ok=True)
        atomic.write_json(tmp / "export_manifest.json", {
            "kind": "export", "merged": merge, "dtype": dtype if merge else None, "run": str(run.resolve()),
            "method": manifest["method"], "base_model": manifest["base_model"], "data": manifest["data"],
            "template": manifest["template"], "weights_sha256": sha256_tree(tmp), "libraries": library_versions(),
        })
    return output


def _write_merged(manifest: dict, weights: Path, kind: str, dest: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataforge.models import resolve_model

    torch_dtype = getattr(torch, dtype)
    auto_class, extra = AutoModelForCausalLM, {}
    if manifest.get("objective") == "reward":  # a reward model keeps its scalar head
        from transformers import AutoModelForSequenceClassification

        auto_class, extra = AutoModelForSequenceClassification, {"num_labels": 1}
    if kind == "full_model":
        model = auto_class.from_pretrained(str(weights), dtype=torch_dtype, **extra)
    else:
        from peft import PeftModel

        base_info = manifest["base_model"]
        kwargs = {"revision": base_info["revision"]} if base_info.get("revision") else {}
        base = auto_class.from_pretrained(resolve_model(base_info["path"] or base_info["name"]),
                                          dtype=torch_dtype, **kwargs, **extra)
        peft_model = PeftModel.from_pretrained(base, str(weights))
        if peft_model.peft_config["default"].is_prompt_learning:
            raise InputError(f"method {manifest['method']} adds virtual tokens, not weight deltas; it cannot be "
                             "merged (export without --merge and load it over the base model)", file=str(weights))
        model = peft_model.merge_and_unload()
    model.save_pretrained(str(dest), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(weights)).save_pretrained(str(dest))
    if (weights / TEMPLATE_FILE).is_file():
        shutil.copy2(weights / TEMPLATE_FILE, dest / TEMPLATE_FILE)

"""The trained weights and the run manifest.

`adapter/` is what `PeftModel.from_pretrained(base, adapter/)` loads (for `full`, a whole model
folder for `AutoModelForCausalLM`). It also holds the tokenizer, whose chat template is the prompt
format of the training data, and the build's `template.json`, so evaluation and chat front ends
prompt the model the way it was trained.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from dataforge import __version__
from dataforge.train.config import TrainConfig
from dataforge.train.outputs import MANIFEST_FILE
from dataforge.util import atomic
from dataforge.util.fingerprint import library_versions

TEMPLATE_FILE = "template.json"


def save_trained_model(accelerator, model, tokenizer, data, cfg: TrainConfig, path: Path) -> None:
    """Write the adapter (or full model) atomically; every process must call this (FSDP gathers)."""
    write_weights(accelerator, model, tokenizer, data.template, path)


def write_weights(accelerator, model, tokenizer, template: dict, path: Path) -> None:
    """`path` as `PeftModel.from_pretrained` (or `AutoModelForCausalLM`) loads it, with the tokenizer and
    template.json, written atomically. Every process must call this (FSDP gathers the state dict);
    checkpoints call it too, so each one can be scored like the final adapter."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state_dict = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with atomic.atomic_path(path, is_dir=True) as tmp:
            unwrapped.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            atomic.write_json(tmp / TEMPLATE_FILE, template)
    accelerator.wait_for_everyone()


def training_chat_template(data, tokenizer) -> str | None:
    """The chat template of the prompt format the data was rendered with, to save with the model (see
    dataforge.data.chat_template). Checked before training: a template file edited since the build
    would describe a format the model never saw."""
    from dataforge.data.chat_template import trained_chat_template
    from dataforge.data.templates import TemplateKind, load_template
    from dataforge.errors import StateError
    from dataforge.models import load_tokenizer

    info = data.template or {}
    if not info.get("name"):
        return getattr(tokenizer, "chat_template", None)
    template = load_template(((data.manifest.get("config") or {}).get("template") or {}).get("name") or info["name"])
    if info.get("sha256") and template.sha256 != info["sha256"]:
        raise StateError(f"template '{template.name}' ({template.path}) changed since {data.run_dir} was built; "
                         "rebuild the data so the saved chat template matches what the model is trained on")
    build_tokenizer = tokenizer
    built_with = (data.manifest.get("tokenize") or {}).get("tokenizer")
    if template.kind is TemplateKind.chat and built_with:
        build_tokenizer = load_tokenizer(built_with)
    return trained_chat_template(template, build_tokenizer)


def base_model_record(cfg: TrainConfig, model_config) -> dict:
    """Base model id, where it was loaded from, and a content hash (local) or the resolved revision (hub)."""
    from dataforge.models import model_fingerprint, resolve_model

    path = resolve_model(cfg.model)
    local = Path(path).exists()
    return {"name": cfg.model, "path": path if local else None,
            "revision": cfg.revision or getattr(model_config, "_commit_hash", None),
            "weights_fingerprint": model_fingerprint(cfg.model) if local else None,
            "architecture": (getattr(model_config, "architectures", None) or [None])[0]}


def write_manifest(out: Path, cfg: TrainConfig, meta: dict, stats: dict | None, complete: bool) -> dict:
    """`manifest.json`: enough to know exactly what was trained on what, and how fast."""
    data = meta["data"]
    manifest = {
        "kind": "train",
        "complete": complete,
        "dataforge_version": __version__,
        "base_model": meta["base_model"],
        "method": cfg.method,
        "objective": cfg.objective.value,
        "model": asdict(meta["info"]),
        "data": {"run_dir": str(data.run_dir), "fingerprint": data.fingerprint, "packed": data.packed,
                 "max_length": (data.manifest.get("tokenize") or {}).get("max_length"),
                 "train_rows": data.train.num_rows, "val_rows": data.val.num_rows if data.val is not None else 0,
                 "train_by_source": {src: s["by_split"]["train"] for src, s in data.manifest.get("sources", {}).items()}},
        "template": data.template,
        "weights": {"path": "adapter", "kind": "full_model" if cfg.method == "full" else "peft_adapter"},
        "precision": meta["info"].precision,
        "optimizer": meta["optimizer"],
        "device": meta["device"],
        "world_size": meta["world_size"],
        "distributed": meta["distributed"],
        "total_steps": meta["total_steps"],
        "warmup_steps": meta["warmup_steps"],
        "config": cfg.model_dump(mode="json"),
        "stats": stats,
        "libraries": library_versions(),
    }
    atomic.write_json(out / MANIFEST_FILE, manifest)
    return manifest

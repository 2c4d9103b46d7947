"""Load the model once and build one eval target per results folder: the base, and each adapter.

Loglikelihood tasks score on the loaded transformers model (one peft model holding every adapter;
the base is that model with its adapters switched off). Generation tasks go to the chosen backend:
with `vllm`, each adapter's generations come from merged weights or from one multi-LoRA engine
(`dataforge.generate.adapters` decides and says why), and the manifest records which engine made
what. Before anything is scored, each adapter must change the model's logits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.eval.config import EvalOptions
from dataforge.eval.lm import HFLanguageModel
from dataforge.eval.runner import EvalTarget
from dataforge.generate.adapters import ServePlan, check_adapter_changes_logits, notify, plan_adapters
from dataforge.util.fingerprint import fingerprint


class SharedEngine:
    """One vLLM engine with `enable_lora`, started at the first generate of any target that uses it."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self.backend = make, None

    def get(self):
        if self.backend is None:
            self.backend = self._make()
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


class LoRAView:
    """A `GenerationBackend` that sends every request through a shared engine with one adapter (None:
    the base). Closing it leaves the engine to its owner."""

    def __init__(self, engine: SharedEngine, adapter: str | None):
        self.engine, self.adapter = engine, adapter
        self.name = "vllm"

    def generate(self, prompts, params):
        return self.engine.get().generate(prompts, params, adapter=self.adapter)

    def close(self) -> None:
        """The shared engine outlives each view; `evaluate` closes it."""


def quantization_config(quantize: str):
    """bitsandbytes settings of `--quantize` (4-bit: NF4 with float32 compute, as QLoRA on CPU)."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_targets(model: str, adapters: str | Sequence[str] | None, outs: Path | Sequence[Path],
                 base_out: Path | None, options: EvalOptions,
                 noise: Sequence[tuple[int, Path]] = ()) -> tuple[list[EvalTarget], Any]:
    """Targets for each adapter (into `outs`, in order; the bare model when there is none), for the
    base when `base_out` is given, and for each (seed, folder) re-run of the base in `noise`.
    Returns (targets, tokenizer)."""
    import torch

    from dataforge.models import load_causal_lm, load_tokenizer, model_fingerprint, resolve_model

    adapters = [] if adapters is None else [adapters] if isinstance(adapters, str) else [str(a) for a in adapters]
    outs = [Path(outs)] if isinstance(outs, (str, Path)) else list(outs)
    if base_out is not None and not adapters:
        raise InputError("--base-out compares a model with and without its adapter; give --adapter too")
    quantized = options.quantize != "none"
    dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    tokenizer = load_tokenizer(model)
    extra = {"quantization_config": quantization_config(options.quantize)} if quantized else {}
    loaded = load_causal_lm(model, adapters[0] if adapters else None, dtype=dtype,
                            device=None if quantized else device, **extra)
    names = {a: f"adapter{i}" if i else "default" for i, a in enumerate(adapters)}
    for a in adapters[1:]:
        loaded.load_adapter(a, adapter_name=names[a])
    for a in adapters:
        check_adapter_changes_logits(loaded, tokenizer, names[a])
    path = resolve_model(model)
    backend = options.backend
    if quantized and backend != "transformers":
        notify(f"--quantize {options.quantize}: generation runs on transformers (the {backend} backend does "
               "not load this bitsandbytes copy)")
        backend = "transformers"
    plans = {p.adapter.path: p for p in plan_adapters(adapters, options.lora_mode, on_gpu)} \
        if backend == "vllm" else {}
    for p in plans.values():
        notify(p.notice)
    shared = None
    lora_served = tuple(a for a, p in plans.items() if p.mode == "multi-lora")
    if lora_served:
        shared = SharedEngine(lambda: _load("vllm", model, dtype=options.dtype, lora_adapters=lora_served))

    def generation(adapter: str | None, info: dict) -> Callable[[], Any]:
        """The backend factory of one target; `info` learns which engine and LoRA path it takes."""
        plan: ServePlan | None = plans.get(adapter) if adapter else None
        if backend == "transformers" or (plan is not None and plan.mode == "transformers"):
            info.update(engine="transformers", lora_mode=None if adapter is None else "peft")
            kw = {"device": device, "dtype": options.dtype, "batch_size": options.batch_size, "adapter": adapter,
                  **extra}
            return lambda: _load("transformers", model, **kw)
        if backend != "vllm":
            if adapter is not None:
                raise InputError(f"backend '{backend}' cannot apply a peft adapter; use transformers or vllm")
            info.update(engine=backend, lora_mode=None)
            return lambda: _load(backend, model, dtype=options.dtype)
        if shared is not None and (adapter is None or plan.mode == "multi-lora"):
            info.update(engine="vllm", lora_mode=None if adapter is None else "multi-lora")
            return lambda: LoRAView(shared, adapter)
        info.update(engine="vllm", lora_mode=None if adapter is None else "merged")

        def merged():
            engine = _load("vllm", model, dtype=options.dtype, adapter=adapter, lora_mode="merged")
            info["served_model"] = engine.served_model
            return engine
        return merged

    def target(adapter: str | None, out_dir: Path, label: str) -> EvalTarget:
        fp = model_fingerprint(model, adapter)
        if quantized:
            fp = fingerprint(fp, "bitsandbytes", options.quantize)
        info: dict = {}          # the manifest's "generation"; the merged path adds its folder when it starts
        make = generation(adapter, info)
        info["key"] = info["engine"] if info["lora_mode"] in (None, "peft") else f"{info['engine']}+{info['lora_mode']}"
        lm = HFLanguageModel(loaded, tokenizer, name=label, fingerprint=fp, batch_size=options.batch_size,
                             use_adapter=adapter is not None or not adapters, adapter_name=names.get(adapter) if adapter else None,
                             generator=make)
        manifest = {"model": model, "model_path": path, "adapter": adapter, "model_fingerprint": fp,
                    "backend": backend, "quantize": options.quantize, "generation": info,
                    "backends": {"generation": info["key"], "loglikelihood": "transformers"}}
        return EvalTarget(lm=lm, out=out_dir, manifest=manifest, label=label, shared=shared,
                          template=read_adapter_template(adapter) if adapter else None)

    labels = ["tuned"] if len(adapters) == 1 else [o.name for o in outs]     # distinct folder names
    targets = [target(a, o, lab) for a, o, lab in zip(adapters, outs, labels, strict=True)] if adapters \
        else [target(None, outs[0], "model")]
    if base_out is not None:
        targets.insert(0, target(None, base_out, "base"))
    for seed, folder in noise:
        rerun = target(None, folder, f"{'base' if adapters else 'model'}-seed{seed}")
        rerun.seed = seed
        rerun.manifest["noise_of"] = str(base_out if adapters else outs[0])
        targets.append(rerun)
    return targets, tokenizer


def _load(name: str, model: str, **kwargs):
    from dataforge.generate.base import load_backend

    return load_backend(name, model, **kwargs)


def read_adapter_template(adapter: str) -> dict | None:
    """The adapter's template.json ({"name", "sha256", ...}), or None when it has none."""
    path = Path(adapter) / "template.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError("must be an object with the template's name", file=str(path), field="name")
    return data

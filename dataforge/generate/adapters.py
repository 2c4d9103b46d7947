"""Serving a tune: how a base model plus a peft adapter reaches a generation engine.

There are two ways to let vLLM generate for a tune, and which is faster depends on the hardware:

- `merged`: fold the adapter into the base weights once (`merge_and_unload`) and serve the result as
  a plain model. The merge is cached under `$DATAFORGE_HOME/merged/<key>`, keyed by the content
  fingerprints of the base weights and of the adapter, so every later eval of the same tune reuses it.
- `multi-lora`: one engine with `enable_lora` serves the base and every adapter, each request naming
  its adapter (`LoRARequest`). On GPUs vLLM runs LoRA in fused kernels and one engine for many
  adapters pays; on CPU it runs LoRA uncompiled and loses to merged weights by 2-6x
  (benchmarks/RESULTS.md, "bench_generate"), so `auto` picks it only on a GPU with several adapters.

Adapters vLLM cannot serve as LoRA (DoRA, IA3, trained embeddings or lm_head, LoRA bias) take the
merged path; adapters that add virtual tokens (prompt tuning) cannot be merged and are generated with
transformers. Each such fallback is said in one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dataforge.errors import InputError
from dataforge.util.fingerprint import fingerprint, sha256_tree

LoraMode = Literal["auto", "merged", "multi-lora"]
LORA_MODES: tuple[str, ...] = ("auto", "merged", "multi-lora")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)     # vLLM's `max_lora_rank` choices
MERGE_FORMAT = 1


def notify(notice: str | None) -> None:
    """A one-line notice on stderr: the user should know a tune took another path than asked."""
    if notice:
        print(notice, file=sys.stderr)


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder's adapter_config.json says about how it can be served."""

    path: str
    peft_type: str
    rank: int
    lora_blocker: str | None       # why vLLM cannot serve it as LoRA (None: it can)
    mergeable: bool

    @property
    def name(self) -> str:
        return Path(self.path).name or "adapter"


def read_adapter(path: str | os.PathLike) -> AdapterInfo:
    """Read `path`/adapter_config.json; an unreadable one is an InputError naming the file."""
    cfg_path = Path(path) / "adapter_config.json"
    if not cfg_path.is_file():
        raise InputError("not a peft adapter folder (no adapter_config.json)", file=str(path))
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(cfg_path), line=exc.lineno) from None
    peft_type = str(cfg.get("peft_type", "")).upper()
    ranks = [int(cfg.get("r") or 0), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())]
    blocker = None
    if peft_type != "LORA":
        blocker = f"{peft_type or 'an unknown peft type'} is not LoRA"
    elif cfg.get("use_dora"):
        blocker = "DoRA"
    elif [m for m in cfg.get("modules_to_save") or [] if m not in ("classifier", "score")]:
        blocker = f"it trains whole modules ({', '.join(cfg['modules_to_save'])})"
    elif cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        blocker = "it trains biases"
    elif max(ranks) > VLLM_LORA_RANKS[-1]:
        blocker = f"rank {max(ranks)} is above vLLM's {VLLM_LORA_RANKS[-1]}"
    prompt_learning = peft_type in ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING")
    return AdapterInfo(path=str(path), peft_type=peft_type, rank=max(ranks), lora_blocker=blocker,
                       mergeable=not prompt_learning)


def max_lora_rank(adapters: Sequence[AdapterInfo]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's rank."""
    need = max((a.rank for a in adapters), default=1)
    return next(r for r in VLLM_LORA_RANKS if r >= need)


def choose_mode(requested: str, n_adapters: int, on_gpu: bool) -> str:
    """`auto`: one multi-LoRA engine on a GPU with two or more adapters, merged weights otherwise
    (one adapter gains nothing from LoRA kernels, and on CPU they are slower than a merged model)."""
    if requested != "auto":
        return requested
    return "multi-lora" if on_gpu and n_adapters >= 2 else "merged"


@dataclass(frozen=True)
class ServePlan:
    """How one adapter's generations are made: `merged`, `multi-lora` or `transformers`."""

    adapter: AdapterInfo
    mode: str
    notice: str | None = None


def plan_adapters(paths: Sequence[str], requested: str, on_gpu: bool) -> list[ServePlan]:
    """One plan per adapter, with a one-line notice wherever an adapter cannot take the chosen path."""
    infos = [read_adapter(p) for p in paths]
    mode = choose_mode(requested, len(infos), on_gpu)
    plans = []
    for info in infos:
        if not info.mergeable:
            plans.append(ServePlan(info, "transformers", f"adapter {info.path}: {info.peft_type} adds virtual "
                                   "tokens, which vLLM cannot serve and cannot be merged; generating with "
                                   "transformers"))
        elif mode == "multi-lora" and info.lora_blocker:
            plans.append(ServePlan(info, "merged", f"adapter {info.path}: vLLM cannot serve it as LoRA "
                                   f"({info.lora_blocker}); serving merged weights"))
        else:
            plans.append(ServePlan(info, mode))
    return plans


def merge_root() -> Path:
    home = os.environ.get("DATAFORGE_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "dataforge") / "merged"


def merge_key(model: str, adapter: str) -> str:
    """Content of the base weights (or its hub id) and of the adapter: a retrained adapter in the
    same folder gets a new merge."""
    from dataforge.models import model_fingerprint

    return fingerprint(MERGE_FORMAT, model_fingerprint(model), sha256_tree(adapter))


def merged_model(model: str, adapter: str, root: Path | None = None) -> Path:
    """A folder holding base + adapter merged in float32, made once and reused by content key."""
    from dataforge.util import atomic

    dest = (root or merge_root()) / merge_key(model, adapter)
    if (dest / "merge.json").is_file():
        return dest
    import torch
    from peft import PeftModel

    from dataforge.models import load_causal_lm, load_tokenizer

    base = load_causal_lm(model, dtype=torch.float32, device="cpu")
    try:
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"adapter {adapter} does not match base model '{model}': "
                         f"{str(exc).splitlines()[0][:300]}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(dest, is_dir=True) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(model).save_pretrained(str(tmp))
        atomic.write_json(tmp / "merge.json", {"model": model, "adapter": str(Path(adapter).resolve()),
                                               "key": dest.name})
    return dest


def check_adapter_changes_logits(base_model, tokenizer, adapter_name: str | None = None) -> float:
    """Largest |logit| change the active adapter makes on a short text; an InputError when it is 0.

    An adapter whose weights never trained (LoRA B still zero), or one that loaded onto no module,
    leaves the model as it was: scoring it would report the base model under the tune's name.
    `base_model` is a peft model with the adapter loaded."""
    import torch

    ids = tokenizer("The quick brown fox answers the question:", return_tensors="pt")["input_ids"]
    ids = ids.to(base_model.device)
    previous = getattr(base_model, "active_adapter", None)
    if adapter_name is not None:
        base_model.set_adapter(adapter_name)
    try:
        with torch.inference_mode():
            tuned = base_model(input_ids=ids).logits.float()
            with base_model.disable_adapter():
                plain = base_model(input_ids=ids).logits.float()
    finally:
        if adapter_name is not None and previous is not None:
            base_model.set_adapter(previous)
    delta = float((tuned - plain).abs().max())
    if delta == 0.0:
        raise InputError(f"adapter {adapter_name or 'default'} leaves the model's logits unchanged (its weights "
                         "are untrained or apply to no module); its scores would be the base model's")
    return delta

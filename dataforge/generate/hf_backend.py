"""Batched `model.generate` with transformers: the backend that runs anywhere torch runs.

Prompts are left-padded so every row's continuation starts at the same column. Sampling follows the
vLLM/OpenAI semantics of `SamplingParams` rather than transformers' defaults: no implicit top-k,
additive presence/frequency penalties over generated tokens, stop strings cut from the returned text.
Each call seeds its own RNG fork, so the same prompts and seed give the same texts whatever ran before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from dataforge.config.base import StrictModel
from dataforge.generate.base import (
    BackendBase,
    Generation,
    Prompt,
    SamplingParams,
    is_chat_prompt,
    truncate_at_stop,
)
from dataforge.models import load_causal_lm, load_tokenizer

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _penalty_processor(prompt_len: int, presence: float, frequency: float):
    from transformers import LogitsProcessor

    class PresenceFrequencyPenalty(LogitsProcessor):
        """OpenAI-style penalties: subtract `presence` once per seen token and `frequency` per occurrence."""

        def __call__(self, input_ids, scores):
            import torch

            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(
                1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    return PresenceFrequencyPenalty()


class TransformersOptions(StrictModel):
    """`backend: {name: transformers, ...}` in YAML."""

    name: Literal["transformers"] = Field("transformers", description="transformers `generate` (CPU or GPU).")
    device: str | None = Field(None, description="Torch device; default cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    batch_size: int = Field(16, ge=1, description="Prompts per forward batch.")
    adapter: str | None = Field(None, description="peft adapter folder: generate with the tune instead of the base.")

    def kwargs(self, seed: int) -> dict:
        return self.model_dump(exclude={"name"})


class TransformersBackend(BackendBase):
    name = "transformers"
    Options = TransformersOptions

    def __init__(self, model: str, *, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 16, adapter: str | None = None, **model_kwargs: Any):
        import torch

        if dtype not in _DTYPES:
            from dataforge.errors import ConfigError

            raise ConfigError(f"backend.dtype: must be one of {', '.join(_DTYPES)} (got {dtype!r})")
        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = load_tokenizer(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = None if dtype == "auto" else getattr(torch, dtype)
        self._lm = load_causal_lm(model, adapter, dtype=torch_dtype, device=self.device, **model_kwargs)
        self.is_chat_model = bool(getattr(self.tokenizer, "chat_template", None))

    def _encode(self, prompt: Prompt) -> list[int]:
        if is_chat_prompt(prompt):
            text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(prompt)["input_ids"]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        import torch

        encoded = [self._encode(p) for p in prompts]
        out: list[list[Generation]] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.startswith("cuda") else []):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for start in range(0, len(encoded), self.batch_size):
                out.extend(self._generate_batch(encoded[start:start + self.batch_size], params))
        return out

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt", padding=True)
        input_ids = padded["input_ids"].to(self.device)
        width = input_ids.shape[1]
        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sample,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(params.stop) or None,
            **({"temperature": params.temperature, "top_p": params.top_p, "top_k": 0} if sample else {}),
        )
        processors = LogitsProcessorList()
        if params.presence_penalty or params.frequency_penalty:
            processors.append(_penalty_processor(width, params.presence_penalty, params.frequency_penalty))
        with torch.inference_mode():
            sequences = self._lm.generate(
                input_ids=input_ids, attention_mask=padded["attention_mask"].to(self.device),
                generation_config=config, logits_processor=processors, tokenizer=self.tokenizer,
            )
        rows = sequences[:, width:].tolist()
        results: list[list[Generation]] = []
        for i, prompt_ids in enumerate(batch):
            gens = [self._finish(rows[i * params.n + j], len(prompt_ids), params) for j in range(params.n)]
            results.append(gens)
        return results

    def _finish(self, ids: list[int], prompt_tokens: int, params: SamplingParams) -> Generation:
        """Count the tokens actually generated (finished rows are padded) and name why generation ended."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        used, hit_eos = len(ids), False
        for k, tok in enumerate(ids):
            if tok == eos:
                used, hit_eos = k + 1, True
                break
            if tok == pad:
                used = k
                break
        text = self.tokenizer.decode(ids[:used], skip_special_tokens=True)
        text, hit_stop = truncate_at_stop(text, params.stop)
        stopped = hit_stop or hit_eos or used < params.max_tokens
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=used,
                          finish_reason="stop" if stopped else "length")

    def close(self) -> None:
        self._lm = None

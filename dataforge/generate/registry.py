"""Backends by name. Each entry is imported only when asked for, so `vllm` stays optional."""

from __future__ import annotations

import difflib
import importlib

from dataforge.errors import ConfigError

BACKENDS: dict[str, str] = {
    "transformers": "dataforge.generate.hf_backend:TransformersBackend",
    "vllm": "dataforge.generate.vllm_backend:VLLMBackend",
    "openai": "dataforge.generate.openai_backend:OpenAIBackend",
}


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"backend: unknown backend '{name}'{hint}; choose one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def load(name: str, model: str, **kwargs):
    """Build backend `name` for `model`; keyword arguments go to that backend's constructor."""
    return backend_class(name)(model, **kwargs)

"""Backends by name, and the union of their options.

Each backend module owns a pydantic `Options` model (its YAML section, with a `name` tag); configs
that pick an engine (self-instruct, eval, the quickstart) use `BackendOptions`, the tagged union of
them all, so a new engine is one module and one line here. The engine itself is imported only when
built, so `vllm` stays optional.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Annotated, Any, Union

from pydantic import Field

from dataforge.errors import ConfigError

BACKENDS: dict[str, str] = {
    "transformers": "dataforge.generate.hf_backend:TransformersBackend",
    "vllm": "dataforge.generate.vllm_backend:VLLMBackend",
    "openai": "dataforge.generate.openai_backend:OpenAIBackend",
}


def check_name(name: str, where: str = "backend") -> str:
    """`name` when it is a registered backend; a ConfigError with the nearest name otherwise."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown backend '{name}'{hint}; choose one of {', '.join(BACKENDS)}")
    return name


def backend_class(name: str) -> type:
    module, _, cls = BACKENDS[check_name(name)].partition(":")
    return getattr(importlib.import_module(module), cls)


def options_model(name: str) -> type:
    return backend_class(name).Options


BackendOptions = Annotated[Union[tuple(options_model(n) for n in BACKENDS)],  # noqa: UP007
                           Field(discriminator="name")]


def default_options() -> Any:
    return options_model("transformers")()


def load(name: str, model: str, **kwargs):
    """Build backend `name` for `model`; keyword arguments go to that backend's constructor."""
    return backend_class(name)(model, **kwargs)


def load_from_options(options: Any, model: str, seed: int):
    """Build the backend a validated `BackendOptions` section describes."""
    return load(options.name, model, **options.kwargs(seed))

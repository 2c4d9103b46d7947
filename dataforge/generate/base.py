"""One small interface for every generation engine (vLLM, transformers, OpenAI-compatible endpoints).

Prompts and sampling parameters go in; texts, token counts and finish reasons come out. A prompt is
either a plain string (sent as is: completion-style for base models) or a list of chat messages
(`[{"role": ..., "content": ...}]`), which the backend renders with the model's chat template.
Self-instruct and eval both use only this, so a new engine needs one class and one registry line.

    with load_backend("transformers", "tiny") as backend:
        [[gen]] = backend.generate(["1. Name a fruit.\\n2."], SamplingParams(max_tokens=16))
        gen.text, gen.completion_tokens, gen.finish_reason
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from dataforge.errors import ConfigError, DataforgeError

Prompt = str | list[dict[str, str]]
FinishReason = Literal["stop", "length"]


class GenerationError(DataforgeError):
    """The engine or endpoint could not produce generations (unreachable, refused, timed out)."""


@dataclass(frozen=True)
class SamplingParams:
    """The sampling knobs every backend honours, with vLLM/OpenAI semantics.

    `temperature == 0` is greedy decoding. Presence and frequency penalties are additive and count
    only generated tokens (as in vLLM and the OpenAI API). `seed` makes sampling reproducible per call.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.n < 1:
            problems.append(f"sampling.n: must be >= 1 (got {self.n})")
        if self.temperature < 0:
            problems.append(f"sampling.temperature: must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"sampling.top_p: must be in (0, 1] (got {self.top_p})")
        if self.max_tokens < 1:
            problems.append(f"sampling.max_tokens: must be >= 1 (got {self.max_tokens})")
        if any(not s for s in self.stop):
            problems.append("sampling.stop: stop strings must not be empty")
        if problems:
            raise ConfigError(problems)
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class GenerationBackend(Protocol):
    name: str
    model: str
    is_chat_model: bool

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """One list of `params.n` generations per prompt, in prompt order."""
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> GenerationBackend:
        ...

    def __exit__(self, *exc: object) -> None:
        ...


class BackendBase:
    """Context-manager plumbing shared by the backends: `with load_backend(...) as b:` frees the engine."""

    name: str = ""
    model: str = ""
    is_chat_model: bool = False

    def close(self) -> None:
        """Release the engine (worker processes, GPU memory, HTTP pools). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop string, as vLLM and the OpenAI API return it (stop excluded)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def is_chat_prompt(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return False
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return True
    raise TypeError(f"a prompt is a string or a list of {{role, content}} messages, got {type(prompt).__name__}")


def load_backend(name: str, model: str, **kwargs) -> GenerationBackend:
    """Construct a backend by name: `vllm`, `transformers` or `openai`."""
    from dataforge.generate import registry

    return registry.load(name, model, **kwargs)

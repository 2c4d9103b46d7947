"""One small interface for every generation engine (vLLM, transformers, OpenAI-compatible endpoints).

Prompts and sampling parameters go in; texts, token counts and finish reasons come out. A prompt is
either a plain string (sent as is: completion-style for base models) or a list of chat messages
(`[{"role": ..., "content": ...}]`), which the backend renders with the model's chat template.
Self-instruct and eval both use only this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union

Prompt = Union[str, list[dict[str, str]]]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    extra: dict = field(default_factory=dict)


class GenerationBackend(Protocol):
    name: str
    model: str

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """One list of `params.n` generations per prompt, in prompt order."""
        ...

    def close(self) -> None:
        ...


def load_backend(name: str, model: str, **kwargs) -> GenerationBackend:
    """Construct a backend by name: `vllm`, `transformers` or `openai`."""
    from dataforge.generate import registry

    return registry.load(name, model, **kwargs)

from dataforge.generate.base import (
    Generation,
    GenerationBackend,
    GenerationError,
    Prompt,
    SamplingParams,
    load_backend,
)

__all__ = ["Generation", "GenerationBackend", "GenerationError", "Prompt", "SamplingParams", "load_backend"]

from dataforge.generate.base import Generation, GenerationBackend, SamplingParams, load_backend

__all__ = ["Generation", "GenerationBackend", "SamplingParams", "load_backend"]

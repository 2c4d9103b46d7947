"""vLLM's notices about choices dataforge made for the user are hidden; everything else still shows."""

from __future__ import annotations

import io
import logging

from dataforge.generate.vllm_noise import VLLMNoiseFilter


def test_crash_notice_and_dtype_notes_are_hidden_other_warnings_and_errors_are_not():
    stream = io.StringIO()
    root = logging.getLogger("dataforge-test-vllm")
    handler = logging.StreamHandler(stream)
    handler.addFilter(VLLMNoiseFilter())
    root.addHandler(handler)
    root.propagate, old = False, root.propagate
    try:
        log = root.getChild("engine.arg_utils")
        log.warning("This model does not officially support disabling chunked prefill. Disabling this manually "
                    "may cause the engine to crash or produce incorrect outputs.")
        root.getChild("config.model").warning("Casting %s to %s.", "torch.bfloat16", "torch.float32")
        root.getChild("model_executor.layers").warning("Layer %d: dtype float32 is not supported by the "
                                                       "fused kernel; using the reference path.", 3)
        log.warning("Not enough KV cache space: reduce max_model_len.")
        log.error("The engine crashed: dtype mismatch in layer 3")
    finally:
        root.removeHandler(handler)
        root.propagate = old
    lines = stream.getvalue().splitlines()
    assert lines == ["Not enough KV cache space: reduce max_model_len.", "The engine crashed: dtype mismatch in layer 3"]

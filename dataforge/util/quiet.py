"""`-q`: nothing on the terminal from the libraries dataforge drives, only dataforge's own result.

transformers (its "Loading weights" bars, its warnings), huggingface_hub and datasets (download and
map bars), vLLM (its logger, and the tqdm bars of its worker processes) are each silenced through
their own switch. The environment variables reach vLLM's worker processes, which inherit them.
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
             "VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR"}


def quiet_libraries() -> None:
    """Silence progress bars, warnings and library logs for the rest of the process."""
    os.environ.update(QUIET_ENV)
    warnings.filterwarnings("ignore")
    for name in ("transformers", "datasets", "huggingface_hub", "vllm", "peft", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    import datasets

    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()

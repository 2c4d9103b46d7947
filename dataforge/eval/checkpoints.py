"""`--adapter 'runs/x/checkpoints/*'`: a quoted glob stands for every adapter it matches.

A train run's checkpoints are `checkpoint-<step>/` folders holding the resumable state and, in
`adapter/`, the weights as a peft adapter; a matched folder may be either an adapter folder itself
or such a checkpoint. Matches are sorted naturally (by the numbers in their names, so step 900
comes before step 1000 whatever the zero padding), which keeps the results folders in training order.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from dataforge.train.checkpoint import ADAPTER_DIR

ADAPTER_CONFIG = "adapter_config.json"
_GLOB = re.compile(r"[*?\[]")


def natural_key(path: str) -> list:
    """Sort key that orders the digit runs of a path by value: ckpt-9 < ckpt-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def adapter_folder(path: Path) -> Path | None:
    """The adapter of `path` (the folder itself, or a checkpoint's `adapter/`), or None when it has none."""
    for candidate in (path, path / ADAPTER_DIR):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    return None


def expand_adapters(adapters: list[str]) -> list[str]:
    """Each glob pattern replaced by the adapters it matches, in natural order; plain paths are kept
    as given (peft reports their own errors). Raises ValueError naming the pattern that matches
    nothing, or the matched folder that holds no adapter."""
    out: list[str] = []
    for pattern in adapters:
        if not _GLOB.search(pattern):
            out.append(pattern)
            continue
        matches = sorted((m for m in glob.glob(pattern) if Path(m).is_dir()), key=natural_key)
        if not matches:
            raise ValueError(f"{pattern!r} matches no folder (quote the pattern so the shell leaves it to dataforge)")
        for match in matches:
            found = adapter_folder(Path(match))
            if found is None:
                raise ValueError(f"{match} (matched by {pattern!r}) holds no {ADAPTER_CONFIG}, neither itself nor "
                                 f"in {ADAPTER_DIR}/: not a peft adapter or a checkpoint with one (checkpoints of "
                                 "method 'full' carry no adapter)")
            out.append(str(found))
    return out

"""Per-stage cache: a stage's output is keyed by the fingerprint of its input and its config.

Entries live in `<run>/.cache/<stage>-<key>/` and are written as whole folders with an atomic
rename, so a killed run leaves either a complete entry or none. A re-run with nothing changed finds
every entry and says what it reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from dataforge.data.stage import StageResult
from dataforge.errors import StateError
from dataforge.util.atomic import atomic_path

_DONE = "DONE"


class StageCache:
    def __init__(self, root: Path):
        # prune deletes what it finds here: through a link it would delete folders outside the run.
        if root.is_symlink():
            raise StateError(f"the build cache {root} is a symbolic link (to {os.readlink(root)}); the cache must be a "
                             "folder inside the run folder, because cleaning it deletes what it holds: remove the link")
        self.root = root

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def load(self, stage: str, key: str) -> StageResult | None:
        d = self._dir(stage, key)
        if not (d / _DONE).is_file():
            return None
        extra = json.loads((d / "extra.json").read_text(encoding="utf-8"))
        return StageResult(
            kept=pl.read_ipc(d / "kept.arrow"),
            rejected=pl.read_ipc(d / "rejected.arrow"),
            extra=extra["extra"],
            stats=extra["stats"],
        )

    def save(self, stage: str, key: str, result: StageResult) -> None:
        with atomic_path(self._dir(stage, key), is_dir=True) as tmp:
            # Uncompressed Arrow IPC: several times faster to write than Parquet, and an entry lives only
            # as long as the run folder's next build.
            result.kept.write_ipc(tmp / "kept.arrow", compression="uncompressed")
            result.rejected.write_ipc(tmp / "rejected.arrow", compression="uncompressed")
            payload = {"extra": result.extra, "stats": result.stats}
            (tmp / "extra.json").write_text(json.dumps(payload, ensure_ascii=False, default=str), encoding="utf-8")
            (tmp / _DONE).write_text(key, encoding="utf-8")

    def prune(self, keep: set[str]) -> None:
        """Drop entries no longer referenced by the current run, so the cache does not grow forever."""
        import shutil

        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if d.is_dir() and not d.is_symlink() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

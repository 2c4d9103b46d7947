"""The generation journal: every paid-for completion, on disk before anything is done with it.

A self-instruct run is a deterministic function of its config, its seed tasks and the completions it
got back. So the journal (`generations.jsonl`, one line per generation call, fsync'd) is all the state
a run needs: resuming replays the journal through the same code, which rebuilds the pool, the tasks
and the rejects exactly, and only calls the model for work it has no completion for. A run killed
mid-write leaves at most a partial last line, which is cut off on the next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dataforge.errors import StateError
from dataforge.generate.base import Generation, GenerationBackend, Prompt, SamplingParams


def prompts_sha256(prompts: Sequence[Prompt]) -> str:
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class GenerationJournal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.repaired_bytes = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # killed while appending: the tail was never acknowledged
            self.repaired_bytes = len(data) - complete
            with open(self.path, "r+b") as f:
                f.truncate(complete)
        for lineno, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                entry = json.loads(line)
                key = entry["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise StateError(f"{self.path}:{lineno}: damaged journal line; move the folder aside and "
                                 "start a new run") from None
            if key in self.entries:
                raise StateError(f"{self.path}:{lineno}: journal holds '{key}' twice")
            self.entries[key] = entry

    def lookup(self, key: str, prompts_sha: str, params: SamplingParams) -> list[list[Generation]] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry["prompts_sha256"] != prompts_sha or entry["params"] != params.to_dict():
            raise StateError(f"{self.path}: the recorded generations for '{key}' came from other prompts or "
                             "sampling settings, so the config or seeds changed under this run; use a new "
                             "output folder or --overwrite")
        return [[Generation(**g) for g in gens] for gens in entry["generations"]]

    def append(self, key: str, prompts_sha: str, params: SamplingParams, generations: list[list[Generation]],
               elapsed_s: float) -> None:
        entry = {"key": key, "prompts_sha256": prompts_sha, "params": params.to_dict(),
                 "elapsed_s": round(elapsed_s, 6), "generations": [[g.to_dict() for g in gens] for gens in generations]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[key] = entry

    def totals(self) -> dict:
        """Calls, tokens and engine time over the whole journal, so a resumed run reports its true cost."""
        gens = [g for e in self.entries.values() for row in e["generations"] for g in row]
        seconds = sum(e["elapsed_s"] for e in self.entries.values())
        completion = sum(g["completion_tokens"] for g in gens)
        return {
            "calls": len(self.entries),
            "completions": len(gens),
            "prompt_tokens": sum(g["prompt_tokens"] for g in gens),
            "completion_tokens": completion,
            "generation_seconds": round(seconds, 3),
            "tokens_per_s": round(completion / seconds, 2) if seconds > 0 else None,
        }


class RecordedGenerator:
    """Generation calls through the journal: replayed when recorded, else generated and recorded first.

    The backend is built on the first call that needs it, so replaying a finished run loads no model.
    """

    def __init__(self, journal: GenerationJournal, make_backend: Callable[[], GenerationBackend]):
        self.journal = journal
        self._make_backend = make_backend
        self._backend: GenerationBackend | None = None
        self.live_calls = 0

    def generate(self, key: str, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        sha = prompts_sha256(prompts)
        recorded = self.journal.lookup(key, sha, params)
        if recorded is not None:
            return recorded
        if self._backend is None:
            self._backend = self._make_backend()
        start = time.perf_counter()
        generations = self._backend.generate(prompts, params)
        self.journal.append(key, sha, params, generations, time.perf_counter() - start)
        self.live_calls += 1
        return generations

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

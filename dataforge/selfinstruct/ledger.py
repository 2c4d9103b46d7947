"""What a run accepted and rejected, and why: the source of the output folder and of the manifest.

Every candidate instruction ends in exactly one place: an accepted task in `tasks.alpaca.jsonl`
(listed in `pool.jsonl` with status `accepted`), or a row of `rejects.jsonl` with the filter that
dropped it. Instance-level drops and unreadable completions are rejects rows too, with their own
stage, so nothing the model produced disappears without a record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dataforge.util.atomic import write_jsonl

TASKS_FILE = "tasks.alpaca.jsonl"
POOL_FILE = "pool.jsonl"
REJECTS_FILE = "rejects.jsonl"
MANIFEST_FILE = "manifest.json"
JOURNAL_FILE = "generations.jsonl"
STATE_FILE = ".selfinstruct.json"
RUN_FILES = (TASKS_FILE, POOL_FILE, REJECTS_FILE, MANIFEST_FILE, JOURNAL_FILE, STATE_FILE)

# Stages of a reject row: a candidate instruction, a task after instance generation, one instance,
# or a completion that yielded no candidate at all.
CANDIDATE_STAGES = ("instruction", "task")


@dataclass
class Ledger:
    tasks: list[dict] = field(default_factory=list)      # Alpaca rows of accepted tasks
    pool: list[dict] = field(default_factory=list)       # machine instructions that passed the filters
    rejects: list[dict] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)    # filter -> candidates it looked at
    dropped: Counter = field(default_factory=Counter)    # filter -> candidates it dropped
    candidates: int = 0
    accepted: int = 0
    prompts: int = 0
    batches: int = 0

    def reject(self, stage: str, filter_name: str, reason: str, **row) -> None:
        self.rejects.append({"stage": stage, "filter": filter_name, "reason": reason, **row})
        if stage in CANDIDATE_STAGES:
            self.dropped[filter_name] += 1

    def check(self, filter_name: str) -> None:
        """Count a candidate reaching `filter_name`, whatever the verdict."""
        self.checked[filter_name] += 1

    def accept(self, pool_entry: dict, rows: list[dict]) -> None:
        self.accepted += 1
        pool_entry["status"] = "accepted"
        self.tasks.extend(rows)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.candidates if self.candidates else 0.0

    def accounting(self) -> dict:
        """Candidates = accepted + rejected, per filter; the manifest carries it and tests check it."""
        filters = {
            name: {"checked": self.checked[name], "rejected": self.dropped[name],
                   "acceptance_rate": round(1 - self.dropped[name] / self.checked[name], 4) if self.checked[name] else None}
            for name in sorted(set(self.checked) | set(self.dropped))
        }
        return {
            "candidates": self.candidates,
            "accepted": self.accepted,
            "rejected": sum(self.dropped.values()),
            "acceptance_rate": round(self.acceptance_rate, 4),
            "alpaca_rows": len(self.tasks),
            "per_filter": filters,
            "instance_rejects": sum(1 for r in self.rejects if r["stage"] == "instance"),
            "unparseable_completions": sum(1 for r in self.rejects if r["stage"] == "completion"),
        }

    def write(self, out: Path) -> None:
        write_jsonl(out / TASKS_FILE, self.tasks)
        write_jsonl(out / POOL_FILE, self.pool)
        write_jsonl(out / REJECTS_FILE, self.rejects)

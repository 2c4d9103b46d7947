"""The keep/drop checks of Self-Instruct, each returning None (keep) or the reason it drops.

Instruction filters run cheapest first: length, keywords, start; novelty (ROUGE-L against the pool)
runs last and lives in `novelty.py`. Instance checks follow the paper's clean-up: no empty outputs,
no output equal to its input, no half-written field ending in a colon, no duplicates, and no input
that two instances answer differently.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from dataforge.selfinstruct.config import FiltersConfig
from dataforge.selfinstruct.parse import Instance

INSTRUCTION_FILTERS = ("length", "keywords", "start", "novelty")


class InstructionFilters:
    def __init__(self, cfg: FiltersConfig):
        self.cfg = cfg
        words = "|".join(re.escape(k) for k in cfg.keywords)
        self._keywords = re.compile(rf"\b({words})\b", re.IGNORECASE) if cfg.keywords else None
        self._prefixes = tuple(p.lower() for p in cfg.banned_prefixes)

    def length(self, text: str) -> str | None:
        n = len(text.split())
        if n < self.cfg.min_words:
            return f"{n} words; fewer than {self.cfg.min_words}"
        if n > self.cfg.max_words:
            return f"{n} words; more than {self.cfg.max_words}"
        return None

    def keywords(self, text: str) -> str | None:
        found = self._keywords.search(text) if self._keywords else None
        if found:
            return f"contains the blacklisted word '{found.group(1)}'"
        lowered = text.lower()
        for prefix in self._prefixes:
            if lowered.startswith(prefix):
                return f"starts with the banned prefix '{prefix}'"
        return None

    def start(self, text: str) -> str | None:
        if not self.cfg.start or not text:
            return None
        if text[0] in string.punctuation:
            return f"starts with punctuation {text[0]!r}"
        if not text[0].isascii():
            return f"starts with a non-ASCII character {text[0]!r}"
        return None


@dataclass(frozen=True)
class InstanceVerdict:
    instance: Instance
    reason: str | None  # None: kept


def invalid_instance(inst: Instance) -> str | None:
    if not inst.output:
        return "empty_output"
    if inst.input == inst.output:
        return "input_equals_output"
    if inst.input.endswith(":") or inst.output.endswith(":"):
        return "incomplete_field"
    return None


def judge_instances(instances: list[Instance], max_instances: int) -> list[InstanceVerdict]:
    """A verdict for every parsed instance, in order; at most `max_instances` are kept."""
    outputs_by_input: dict[str, set[str]] = {}
    for inst in instances:
        if inst.input and invalid_instance(inst) is None:
            outputs_by_input.setdefault(inst.input, set()).add(inst.output)
    seen: set[Instance] = set()
    verdicts = []
    for inst in instances:
        reason = invalid_instance(inst)
        if reason is None and inst.input and len(outputs_by_input[inst.input]) > 1:
            reason = "conflicting_outputs"
        if reason is None and inst in seen:
            reason = "duplicate_instance"
        if reason is None and len(seen) >= max_instances:
            reason = "over_max_instances"
        if reason is None:
            seen.add(inst)
        verdicts.append(InstanceVerdict(inst, reason))
    return verdicts

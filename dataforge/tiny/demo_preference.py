"""The bundled demo preference pairs, derived deterministically from the demo `domain.jsonl`.

Rule (stated in `assets/demo/preference/README.md`): *chosen* is the Verdant Row answer in the house
style: a `Diagnosis:` line, then complete numbered steps. *rejected* answers the same ticket but breaks
the house style in one of three ways, picked by a seeded draw: a vague one-line brush-off, the
diagnosis alone with no steps, or the steps as one unnumbered paragraph with no diagnosis line.

The rejected answers are shorter than the chosen ones, so a base model, which gives short text the
higher total log-probability, prefers the rejected answer for most pairs; a preference tune has to
learn the style to turn that around. Run `python -m dataforge.tiny.demo_preference` to rewrite the file
byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from random import Random

from dataforge.paths import DEMO_DATA_DIR

PAIRS_FILE = DEMO_DATA_DIR / "preference" / "pairs.jsonl"
SEED = 11
KINDS = ("vague", "diagnosis_only", "unnumbered")
VAGUE = (
    "Check the system and adjust it if needed.",
    "This looks like a normal fluctuation; keep an eye on it.",
    "Try restarting the controller and see if it helps.",
    "Contact support if the problem continues.",
    "It is probably fine. Check again tomorrow.",
    "Adjust the settings until the reading looks right.",
)
_STEP = re.compile(r"^\d+\.\s+")


def _distinct_domain_records() -> list[tuple[int, dict]]:
    """(line, record) for every demo domain record that is not a planted problem."""
    planted = json.loads((DEMO_DATA_DIR / "planted.json").read_text(encoding="utf-8"))
    skip = {line for lines in planted["files"]["domain.jsonl"]["planted"].values() for line in lines}
    out = []
    for n, line in enumerate((DEMO_DATA_DIR / "domain.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        if n in skip:
            continue
        record = json.loads(line)
        if record["output"].startswith("Diagnosis:"):
            out.append((n, record))
    return out


def rejected_answer(output: str, kind: str, rng: Random) -> str:
    """A worse answer to the same ticket, breaking the house style in the way `kind` names."""
    lines = output.splitlines()
    diagnosis, steps = lines[0], [_STEP.sub("", s) for s in lines[1:] if _STEP.match(s)]
    if kind == "vague":
        return rng.choice(VAGUE)
    if kind == "diagnosis_only":
        return diagnosis
    if kind == "unnumbered":
        return " ".join(steps)
    raise ValueError(kind)


def demo_pairs() -> list[dict]:
    rng = Random(SEED)
    pairs = []
    for line, record in _distinct_domain_records():
        kind = rng.choice(KINDS)
        pairs.append({"id": f"domain:{line}", "instruction": record["instruction"], "input": record.get("input", ""),
                      "chosen": record["output"], "rejected": rejected_answer(record["output"], kind, rng),
                      "rejected_kind": kind})
    return pairs


def write_demo_pairs(path: Path = PAIRS_FILE) -> int:
    from dataforge.util import atomic

    pairs = demo_pairs()
    atomic.write_jsonl(path, pairs)
    return len(pairs)


if __name__ == "__main__":
    print(write_demo_pairs())

"""Turning completions back into instructions, tasks and instances.

Models are sloppy with lists, so the parsers accept "10." and "10)" markers, stray spaces, a reply
that restarts its own numbering, and missing fields; a block that cannot be read whole comes back
marked `malformed` with the reason, so the run can record it instead of dropping it quietly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dataforge.selfinstruct.prompts import NO_INPUT

_ITEM_MARK = re.compile(r"\n[ \t]*\d{1,3}[ \t]?[.)](?=\s|$)")
_ALPACA_FIELD = re.compile(r"(?:^|\n)[ \t]*\d{1,3}[ \t]*\.[ \t]*(Instruction|Input|Output)[ \t]*:", re.IGNORECASE)
_EXAMPLE_MARK = re.compile(r"Example\s?\d*\.?")
_OUTPUT_MARK = re.compile(r"Output\s*\d*\s*:")
_INPUT_MARK = re.compile(r"Input\s*\d*\s*:")


@dataclass(frozen=True)
class ParsedTask:
    instruction: str
    input: str = ""
    output: str = ""
    malformed: str | None = None  # why the block could not be read; None when it parsed


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_numbered_instructions(text: str) -> list[str]:
    """Instructions from the continuation of a prompt that ended in "k+1.".

    The text before the first item marker is item k+1 itself; chat replies that start with their own
    "9." are handled by the same split. Empty items are not candidates and are skipped.
    """
    pieces = _ITEM_MARK.split("\n" + text)
    return [item for item in (collapse(p) for p in pieces) if item]


def parse_alpaca_tasks(text: str, first_number: int) -> list[ParsedTask]:
    """Tasks from the continuation of a prompt that ended in "k+1. Instruction:" (blocks split on ###)."""
    raw = f"{first_number}. Instruction:" + text
    tasks = []
    for block in raw.split("###"):
        if not block.strip():
            continue
        parts = _ALPACA_FIELD.split(block)
        names = [p.lower() for p in parts[1::2]]
        if names != ["instruction", "input", "output"] or parts[0].strip():
            found = ", ".join(names) or "no numbered fields"
            tasks.append(ParsedTask(collapse(block)[:500],
                                    malformed=f"expected Instruction, Input and Output fields in order; found {found}"))
            continue
        instruction, inp, out = (parts[i].strip() for i in (2, 4, 6))
        tasks.append(ParsedTask(collapse(instruction), "" if inp.lower() == NO_INPUT else inp, out))
    return tasks


def parse_is_classification(text: str) -> bool:
    """The model's answer to "Is it classification?"; anything but a leading yes counts as no."""
    return text.strip().lower().startswith("yes")


def _input_output(text: str) -> Instance:
    found = _OUTPUT_MARK.split(text, maxsplit=1)
    inp, out = (found[0], found[1]) if len(found) == 2 else ("", text)
    out = _INPUT_MARK.split(out, maxsplit=1)[0]
    inp = re.sub(r"^\s*Input\s*\d*\s*:", "", inp)
    return Instance(inp.strip(), out.strip())


def parse_input_first(text: str) -> list[Instance]:
    """Instances of an ordinary task: "Example k / Input: / Output:" blocks, or one bare "Output:"."""
    text = text.strip()
    if _EXAMPLE_MARK.search(text):
        return [_input_output(part) for part in _EXAMPLE_MARK.split(text) if part.strip()]
    if _OUTPUT_MARK.search(text):
        return [_input_output(text)]
    return []


def parse_output_first(text: str) -> list[Instance]:
    """Instances of a classification task: "Class label: X" then its input; the label is the output."""
    instances = []
    for chunk in text.split("Class label:")[1:]:
        label, _, rest = chunk.strip().partition("\n")
        rest = re.sub(r"^\s*Input\s*:", "", rest)
        instances.append(Instance(rest.strip(), label.strip()))
    return instances

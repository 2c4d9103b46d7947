"""The four prompts of the algorithm, built from `prompt_data.yaml`.

- instruction generation (Self-Instruct): the header, the sampled instructions numbered 1..k, then
  "k+1." for the model to continue;
- instruction generation (Alpaca): requirements, k seed tasks with input and output in `###` blocks,
  then "k+1. Instruction:";
- "is it classification?", a few-shot yes/no question;
- instance generation: input-first for ordinary tasks, output-first (class label, then input) for
  classification tasks, so that labels are balanced rather than whatever the input happens to suggest.

Every builder returns plain text; `as_chat` wraps it as one user message for chat models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import yaml

PROMPT_DATA = Path(__file__).with_name("prompt_data.yaml")
NO_INPUT = "<noinput>"


@lru_cache(maxsize=1)
def prompt_data() -> dict:
    return yaml.safe_load(PROMPT_DATA.read_text(encoding="utf-8"))


def one_line(text: str) -> str:
    """Instructions are shown on one line each; a trailing colon would invite the model to answer them."""
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


def self_instruct_prompt(instructions: Sequence[str]) -> str:
    lines = [prompt_data()["self_instruct"]["header"]]
    lines += [f"{i}. {one_line(text)}" for i, text in enumerate(instructions, start=1)]
    return "\n".join(lines) + f"\n{len(instructions) + 1}."


def alpaca_prompt(tasks: Sequence[tuple[str, str, str]], num_new_tasks: int) -> str:
    """`tasks` are (instruction, input, output) seed triples; an empty input is shown as <noinput>."""
    parts = [prompt_data()["alpaca"]["header"].format(num_tasks=num_new_tasks), ""]
    for i, (instruction, inp, out) in enumerate(tasks, start=1):
        parts += ["###", f"{i}. Instruction: {one_line(instruction)}", f"{i}. Input:", inp or NO_INPUT,
                  f"{i}. Output:", out]
    parts += ["###", f"{len(tasks) + 1}. Instruction:"]
    return "\n".join(parts)


def classification_prompt(instruction: str, num_examples: int) -> str:
    data = prompt_data()["classify"]
    blocks = [data["header"]]
    blocks += [f"Task: {ex['task']}\nIs it classification? {ex['answer']}" for ex in data["examples"][:num_examples]]
    blocks.append(f"Task: {one_line(instruction)}\nIs it classification?")
    return "\n\n".join(blocks)


def _input_first_block(task: str, instances: Sequence[dict]) -> str:
    if len(instances) == 1 and not instances[0]["input"]:
        return f"Task: {task}\nOutput:\n{instances[0]['output']}"
    lines = [f"Task: {task}"]
    for k, inst in enumerate(instances, start=1):
        lines += [f"Example {k}", f"Input: {inst['input']}", f"Output: {inst['output']}"]
    return "\n".join(lines)


def _output_first_block(task: str, instances: Sequence[dict]) -> str:
    lines = [f"Task: {task}"]
    for inst in instances:
        lines += [f"Class label: {inst['label']}", f"Input: {inst['input']}"]
    return "\n".join(lines)


def instance_prompt(instruction: str, is_classification: bool, num_examples: int) -> str:
    """Few-shot prompt that ends with the new task, ready for the model to write its instances."""
    key = "instances_output_first" if is_classification else "instances_input_first"
    render = _output_first_block if is_classification else _input_first_block
    data = prompt_data()[key]
    blocks = [data["header"]] + [render(ex["task"], ex["instances"]) for ex in data["examples"][:num_examples]]
    blocks.append(f"Task: {one_line(instruction)}\n")
    return "\n\n".join(blocks)


def as_chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]

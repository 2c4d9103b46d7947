"""The `<think>` reasoning policy (`template.think`): what happens to reasoning written at the start
of an assistant turn.

- keep: rendered and trained like the rest of the turn.
- strip: removed from every assistant turn before rendering, so neither training nor an eval prompt
  holds it.
- final_only: rendered, but it is input: the final answer's reasoning moves from the response to the
  end of the prompt, and an earlier turn's trained span starts after it. The model learns the answer
  given the reasoning, never the reasoning itself.

Only a block that opens the turn counts (`<think>` after optional whitespace, through the first
`</think>` and the whitespace after it); a `<think>` further into a turn is text. The record's own
fields are never changed: the policy applies to what the template renders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

from dataforge.config.build import ThinkPolicy

THINK_PATTERN = r"(?s)^\s*<think>.*?</think>\s*"
_THINK = re.compile(THINK_PATTERN)


def think_prefix(text: str) -> str:
    """The reasoning block that opens `text` (with the whitespace around it), or ""."""
    match = _THINK.match(text or "")
    return match.group(0) if match else ""


def strip_turns(history: Sequence[Mapping[str, str]]) -> list[dict]:
    """Turns with the reasoning removed from the assistant ones."""
    return [{"role": m["role"], "content": _THINK.sub("", m["content"] or "", count=1)}
            if m["role"] == "assistant" else dict(m) for m in history]


def strip_frame(records: pl.DataFrame) -> pl.DataFrame:
    """`output`, and the assistant turns of `history` and `tool_turns`, without their reasoning (for
    rendering only; the template stage keeps the record's fields as they were read)."""
    def turns(col: str) -> pl.Expr:
        role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
        new = pl.when(role == "assistant").then(content.str.replace(THINK_PATTERN, "")).otherwise(content)
        return pl.col(col).list.eval(pl.struct(role.alias("role"), new.alias("content"))).alias(col)

    sft = pl.col("kind").fill_null("") != "text" if "kind" in records.columns else pl.lit(True)
    exprs = [pl.when(sft).then(pl.col("output").str.replace(THINK_PATTERN, "")).otherwise(pl.col("output")).alias("output")]
    exprs += [turns(c) for c in ("history", "tool_turns") if c in records.columns]
    return records.with_columns(exprs)


def move_to_prompt(prompt: str, response: str, output: str) -> tuple[str, str]:
    """final_only: the reasoning that opens `output` moved from the rendered response to the prompt's end."""
    return move_block(prompt, response, think_prefix(output))


def move_block(prompt: str, response: str, block: str) -> tuple[str, str]:
    """`block` (and the whitespace after it) moved from the response to the prompt's end."""
    if not block.strip():
        return prompt, response
    at = response.find(block.strip())
    if at < 0:
        return prompt, response
    end = at + len(block.strip())
    while end < len(response) and response[end].isspace():
        end += 1
    return prompt + response[:end], response[end:]


def policy(value: ThinkPolicy | str) -> ThinkPolicy:
    return value if isinstance(value, ThinkPolicy) else ThinkPolicy(value)

"""Conversations (ShareGPT `conversations`, OpenAI `messages`) as canonical records, tool calls included.

Roles are mapped, never guessed: each format has default role names (LLaMA-Factory's ShareGPT with
tools uses `function_call` for the assistant's call and `observation` for the tool's answer), and
`InputSpec.roles` adds or overrides names. An unmapped role is an `unknown_role` reject that says
how to map it.

Shape rules: a leading system turn (or a top-level `system` field, not both) is `system`; the
conversation ends with an assistant turn, the `output`. The last user turn is the `instruction`,
the turns before it are `history`. Turns between the last user turn and the final answer are the
tool exchange (`tool_turns`: assistant calls and `tool` results); they are allowed only when they
hold a tool result, since two assistant turns in a row with nothing between them have no single
answer to train on. `tools` (a JSON string, as LLaMA-Factory stores it, or a list) is kept as
compact JSON text for the chat template.

A turn's content is a string or OpenAI's list of parts: text parts are joined with a newline (the
parts of one message are separate blocks of text); any other part (an image, audio) is a
`non_text_content` reject, since dropping it would train on a message that refers to what the
model never sees.
"""

from __future__ import annotations

import json

from dataforge.data.io.raw import JSON_DECODER, json_type
from dataforge.data.record import Canonical

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "tool", "function": "tool", "tool": "tool"}
MESSAGE_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system",
                 "tool": "tool", "function": "tool"}
CANONICAL_ROLES = ("user", "assistant", "system", "tool")


class RecordProblem(Exception):
    """One record cannot become a canonical record; `field` uses the record's own field names."""

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


def describe(value: object) -> str:
    """`number 42`, `array [1, 2]`: the type and a short look at the value, for wrong_type messages."""
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return f"{json_type(value)} {shown[:60]}{'...' if len(shown) > 60 else ''}"


def check_str(v: object, name: str) -> str:
    if not isinstance(v, str):
        raise RecordProblem("wrong_type", f"expected a string, got {describe(v)}", name)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordProblem("invalid_unicode", f"holds a lone surrogate U+{ord(v[exc.start]):04X} at character "
                                               f"{exc.start}, which is not valid Unicode", name) from None
    return v


def conversation(value: dict, name: str, role_key: str, content_key: str, roles: dict[str, str], missing: str,
                 *, system_name: str, tools_name: str, unused: set[str]) -> Canonical:
    """One conversation record as a canonical record.

    Turn keys other than role and content are added to `unused` as `<name>[].<key>`."""
    turns_value = value.get(name)
    if turns_value is None:
        raise RecordProblem("missing_field", missing, name)
    if not isinstance(turns_value, list):
        raise RecordProblem("wrong_type", f"expected a list of turns, got {describe(turns_value)}", name)
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(turns_value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise RecordProblem("wrong_type", f"expected a turn object, got {describe(turn)}", where)
        unused.update(f"{name}[].{k}" for k, v in turn.items() if k not in (role_key, content_key) and v is not None)
        raw_role = turn.get(role_key)
        if raw_role is None:
            raise RecordProblem("missing_field", missing, f"{where}.{role_key}")
        role = roles.get(check_str(raw_role, f"{where}.{role_key}").lower())
        if role is None:
            raise RecordProblem("unknown_role", f"unknown role {raw_role!r}; expected one of {', '.join(roles)} "
                                                f"(map it with the input's `roles`, e.g. {{{raw_role}: assistant}})",
                                f"{where}.{role_key}")
        content = turn.get(content_key)
        if content is None:
            raise RecordProblem("missing_field", missing, f"{where}.{content_key}")
        turns.append((role, _content(content, f"{where}.{content_key}")))
    top_system = value.get(system_name)
    if top_system is not None:
        top_system = check_str(top_system, system_name)
        if turns and turns[0][0] == "system":
            raise RecordProblem("bad_turn_order", f"a system message is given twice: in '{system_name}' and as "
                                                  f"the first turn of '{name}'", system_name)
        if top_system:
            turns.insert(0, ("system", top_system))
    tools = _tools(value.get(tools_name), tools_name)
    return _split_turns(turns, name)._replace(tools=tools)


def _content(content: object, where: str) -> str:
    if not isinstance(content, list):
        return check_str(content, where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RecordProblem("wrong_type", f"expected a content part object, got {describe(part)}", at)
        kind = part.get("type")
        if kind != "text":
            raise RecordProblem("non_text_content", f"a part of type {kind!r} cannot be trained on as text, and leaving it "
                                                    "out would train on a message about content the model never "
                                                    "sees; remove the part or the record", f"{at}.type")
        if part.get("text") is None:
            raise RecordProblem("missing_field", "is missing or null", f"{at}.text")
        texts.append(check_str(part["text"], f"{at}.text"))
    return "\n".join(texts)


def _tools(value: object, name: str) -> str:
    """Tool schemas as compact JSON array text; "" for none."""
    if value is None:
        return ""
    parsed = value
    if isinstance(value, str):
        if not value.strip():
            return ""
        try:
            parsed = JSON_DECODER.decode(value)
        except json.JSONDecodeError as exc:
            raise RecordProblem("invalid_tools", f"is not valid JSON ({exc.msg} at character {exc.pos}); it must "
                                                 "hold a list of tool schemas", name) from None
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
        raise RecordProblem("invalid_tools", f"expected a list of tool schema objects, got {describe(parsed)}", name)
    return json.dumps(parsed, ensure_ascii=False) if parsed else ""


def _split_turns(turns: list[tuple[str, str]], name: str) -> Canonical:
    """Leading system turn -> system; final answer -> output; last user turn -> instruction; the turns
    between them -> tool_turns; the turns before the instruction -> history."""
    if not turns:
        raise RecordProblem("no_user_turn", "the conversation is empty", name)
    system, first = "", 0
    if turns[0][0] == "system":
        system, first = turns[0][1], 1
    for i in range(first, len(turns)):
        if turns[i][0] == "system":
            raise RecordProblem("bad_turn_order", f"turn {i} is a system turn; only the first turn may be one", name)
    body = turns[first:]
    users = [i for i, (role, _) in enumerate(body) if role == "user"]
    if not users:
        raise RecordProblem("no_user_turn", "the conversation has no user turn", name)
    if body[-1][0] != "assistant":
        raise RecordProblem("no_assistant_reply", "the conversation must end with an assistant turn, "
                                                  f"but it ends with a {body[-1][0]} turn", name)
    last_user = users[-1]
    between = body[last_user + 1:-1]
    if between and (body[-2][0] != "tool" or not any(role == "tool" for role, _ in between)):
        raise RecordProblem("bad_turn_order", "the conversation ends with two assistant turns; "
                                              "the last one must answer a user or tool turn", name)
    history = [{"role": role, "content": content} for role, content in body[:last_user]]
    tool_turns = [{"role": role, "content": content} for role, content in between]
    return Canonical(system, history, body[last_user][1], "", body[-1][1], tool_turns=tool_turns)

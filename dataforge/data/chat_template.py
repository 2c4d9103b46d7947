"""The chat template a model was trained with, as the Jinja text a tokenizer saves.

A saved tokenizer that keeps its base model's chat template, while the model was tuned on another
prompt format, makes every chat front end (transformers pipelines, vLLM, TGI) prompt the tune in a
format it never saw. So an adapter or a merged model carries the template of its training data:

- a `chat` template rendered through the build tokenizer's own chat template: that template;
- a `text` template (alpaca, plain, ...): the same formats written as Jinja here. A conversation maps
  onto the record the way `render` reads it: a leading system message, the turns before the last
  user message as history, the last user message as the instruction (input empty, so the header is
  the first `no_input` variant), and a final assistant message as the response, followed by eos as
  the tokenized training text is. `add_generation_prompt` renders the prompt alone.
"""

from __future__ import annotations

import json
import string

from dataforge.data.templates import Template, TemplateKind


def _literal(text: str) -> str:
    """A Jinja string literal. Jinja unescapes string literals like Python's unicode_escape, which
    JSON's escapes (\\n, \\", \\\\, \\uXXXX for controls) satisfy; non-ASCII stays as it is."""
    return json.dumps(text, ensure_ascii=False)


def _expression(fmt: str, variables: dict[str, str]) -> str:
    """A str.format string as a Jinja expression: literals and variables joined with `~`."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(fmt):
        if literal:
            parts.append(_literal(literal))
        if name is not None:
            parts.append(variables[name])
    return " ~ ".join(parts) or '""'


def text_chat_template(template: Template) -> str:
    """Jinja for a `text` template; `tokenizer.apply_chat_template` then gives `render`'s prompt
    (and prompt + response + eos for a conversation that ends with the assistant)."""
    if template.kind is not TemplateKind.text:
        raise ValueError(f"template '{template.name}' is a chat template; it has no formats of its own")
    spec = template.spec
    header = _literal(spec.headers[0].no_input) if spec.headers else '""'
    lines = [
        "{%- set ns = namespace(system='', history='', msgs=messages) -%}",
        "{%- if ns.msgs and ns.msgs[0]['role'] == 'system' -%}",
        ("{%- set ns.system = " + _expression(spec.system, {"system": "ns.msgs[0]['content']"}) + " -%}")
        if spec.system else
        f"{{{{- raise_exception({_literal(f'template {template.name} has no place for a system message')}) -}}}}",
        "{%- set ns.msgs = ns.msgs[1:] -%}",
        "{%- endif -%}",
        "{%- set reply = ns.msgs[-1]['content'] if ns.msgs and ns.msgs[-1]['role'] == 'assistant' else none -%}",
        "{%- if reply is not none -%}{%- set ns.msgs = ns.msgs[:-1] -%}{%- endif -%}",
        "{%- if not ns.msgs or ns.msgs[-1]['role'] != 'user' -%}",
        f"{{{{- raise_exception({_literal('the conversation must end with a user message (and an optional assistant reply)')}) -}}}}",
        "{%- endif -%}",
        "{%- for m in ns.msgs[:-1] -%}",
    ]
    for i, (role, fmt) in enumerate(spec.history.items()):
        lines.append(("{%- if" if i == 0 else "{%- elif") + f" m['role'] == {_literal(role)} -%}}")
        lines.append("{%- set ns.history = ns.history ~ " + _expression(fmt, {"content": "m['content']"}) + " -%}")
    if spec.history:
        lines.append("{%- else -%}")
    lines.append(f"{{{{- raise_exception({_literal(f'template {template.name} has no history format for role ')} "
                 "~ m['role']) -}}")
    if spec.history:
        lines.append("{%- endif -%}")
    fields = {"system": "ns.system", "header": header, "history": "ns.history",
              "instruction": "ns.msgs[-1]['content']"}
    lines += [
        "{%- endfor -%}",
        "{{- " + _expression(spec.prompt_no_input, fields) + " -}}",
        "{%- if reply is not none -%}{{- " + _expression(spec.response, {"output": "reply"}) + " ~ eos_token -}}"
        "{%- endif -%}",
    ]
    return "\n".join(lines)


def trained_chat_template(template: Template, build_tokenizer) -> str | None:
    """The chat template to save with a model trained on data rendered by `template`."""
    if template.kind is TemplateKind.chat:
        return getattr(build_tokenizer, "chat_template", None)
    return text_chat_template(template)

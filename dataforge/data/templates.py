"""Prompt templates: YAML files in `templates/` that turn a record into a prompt and a response.

A template is data, not code. A `text` template declares its prompt formats with named placeholders
(`{system}`, `{header}`, `{history}`, `{instruction}`, `{input}`; `{output}` in the response); a
`chat` template defers to the tokenizer's own `apply_chat_template`. Adding a template means adding
a file (or passing its path). The file's sha256 travels with every dataset and adapter so that a model
is never evaluated with a prompt format it was not trained on.

Plain-text records (`kind` "text") have no prompt: whatever the template, their prompt is "" and
their response is the text, so general text mixed into a build is trained on whole and is never
wrapped in an instruction format it does not have. Tool-calling conversations (`tools`,
`tool_turns`) render only through a `chat` template, with the schemas passed as the tokenizer's
`tools=`; a text template refuses them rather than drop the tools.

Two renderers share each template: `apply_template` renders a whole frame with vectorized polars
string expressions (the build), `render` renders one record in plain Python (eval, self-instruct).
Both read the same parsed formats, and a test holds them to identical output.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import polars as pl
import xxhash
from pydantic import Field, field_validator, model_validator

from dataforge.config.base import StrictModel, read_yaml_mapping, validate_config
from dataforge.config.build import ThinkPolicy
from dataforge.data.record import CONTENT_HASH, KIND_TEXT, PROMPT, RESPONSE, TEMPLATE_VARIANT
from dataforge.data.think import THINK_PATTERN, move_to_prompt, policy, strip_frame, strip_turns
from dataforge.errors import ConfigError, InputError
from dataforge.paths import templates_dir
from dataforge.util.fingerprint import sha256_file

_PROMPT_FIELDS = frozenset({"system", "header", "history", "instruction", "input"})
_NO_TOOLS = ("cannot render tool calls, and this record has tool schemas or tool turns that it would drop; "
             "build it with template 'chat' and a tokenizer whose chat template renders tools")


class TemplateKind(str, Enum):
    text = "text"
    chat = "chat"


class HeaderVariant(StrictModel):
    with_input: str = Field(description="Header sentence used when the record has an input.")
    no_input: str = Field(description="Header sentence used when the record has no input.")


def _placeholders(fmt: str) -> list[str]:
    """Placeholder names of a str.format string; raises ValueError on anything but plain `{name}`."""
    names = []
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ValueError(f"bad braces ({exc}); write literal braces as {{{{ and }}}}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain name like {{instruction}}")
        names.append(name)
    return names


def _check_format(fmt: str, allowed: frozenset[str] | set[str], required: set[str]) -> str:
    names = set(_placeholders(fmt))
    unknown = sorted(names - allowed)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"allowed: {', '.join('{' + n + '}' for n in sorted(allowed))}")
    missing = sorted(required - names)
    if missing:
        raise ValueError(f"must contain {', '.join('{' + n + '}' for n in missing)}")
    return fmt


class TemplateSpec(StrictModel):
    """The schema of a template file; the file name (without .yaml) is the template's name."""

    description: str = Field(description="One line saying what the template is and where it comes from.")
    kind: TemplateKind = Field(TemplateKind.text, description="text: rendered from the formats below; "
                               "chat: rendered by the tokenizer's chat template.")
    prompt: str | None = Field(None, description="Prompt format for records with a non-empty input.")
    prompt_no_input: str | None = Field(None, description="Prompt format for records with an empty input.")
    response: str = Field("{output}", description="Response format; {output} is the record's output.")
    system: str | None = Field(None, description="How a non-empty system message renders into {system}.")
    history: dict[str, str] = Field(default_factory=dict,
                                    description="Format of each earlier turn by role (user, assistant); "
                                                "the turns concatenated fill {history}.")
    headers: list[HeaderVariant] = Field(default_factory=list,
                                         description="Header sentences for {header}: the first is the "
                                                     "canonical one, the rest are variants.")

    @field_validator("prompt")
    @classmethod
    def _prompt_ok(cls, v: str | None) -> str | None:
        return None if v is None else _check_format(v, _PROMPT_FIELDS, {"instruction", "input"})

    @field_validator("prompt_no_input")
    @classmethod
    def _prompt_no_input_ok(cls, v: str | None) -> str | None:
        return None if v is None else _check_format(v, _PROMPT_FIELDS - {"input"}, {"instruction"})

    @field_validator("response")
    @classmethod
    def _response_ok(cls, v: str) -> str:
        return _check_format(v, {"output"}, {"output"})

    @field_validator("system")
    @classmethod
    def _system_ok(cls, v: str | None) -> str | None:
        return None if v is None else _check_format(v, {"system"}, {"system"})

    @field_validator("history")
    @classmethod
    def _history_ok(cls, v: dict[str, str]) -> dict[str, str]:
        for role, fmt in v.items():
            try:
                _check_format(fmt, {"content"}, {"content"})
            except ValueError as exc:
                raise ValueError(f"role '{role}': {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TemplateSpec:
        if self.kind is TemplateKind.chat:
            used = [n for n in ("prompt", "prompt_no_input", "system", "history", "headers")
                    if n in self.model_fields_set]
            if used:
                raise ValueError(f"kind 'chat' renders with the tokenizer's chat template; remove {', '.join(used)}")
            return self
        problems = [f"{n}: required for kind 'text'" for n in ("prompt", "prompt_no_input") if getattr(self, n) is None]
        if problems:
            raise ValueError("; ".join(problems))
        # Each optional part is declared exactly when both prompts place it, so no record part is dropped.
        for name, declared in (("header", bool(self.headers)), ("system", self.system is not None),
                               ("history", bool(self.history))):
            placed = [name in _placeholders(p) for p in (self.prompt, self.prompt_no_input)]
            if declared and not all(placed):
                raise ValueError(f"'{name}' is declared but {{{name}}} is missing from prompt or prompt_no_input")
            if not declared and any(placed):
                field = "headers" if name == "header" else name
                raise ValueError(f"{{{name}}} is used in a prompt but '{field}' is not declared")
        return self


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    sha256: str
    spec: TemplateSpec

    @property
    def kind(self) -> TemplateKind:
        return self.spec.kind

    @property
    def needs_tokenizer(self) -> bool:
        return self.spec.kind is TemplateKind.chat

    @property
    def n_variants(self) -> int:
        """How many header variants `variants: true` draws from (1 when the template has none)."""
        return max(1, len(self.spec.headers))


def list_templates() -> list[str]:
    return sorted(p.stem for p in templates_dir().glob("*.yaml"))


def load_template(name_or_path: str) -> Template:
    """A shipped template by name, or any template file by path; unknown names suggest the nearest."""
    path = Path(name_or_path).expanduser()
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = templates_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            names = list_templates()
            close = difflib.get_close_matches(name_or_path, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"template.name: unknown template '{name_or_path}'{hint} "
                              f"(available: {', '.join(names)}; or give a path to a template YAML)")
    elif not path.is_file():
        raise ConfigError(f"template.name: template file not found: {path}")
    data = read_yaml_mapping(path)
    spec = validate_config(TemplateSpec, data, str(path))
    return Template(name=path.stem, path=path, sha256=sha256_file(path), spec=spec)


# ---------------------------------------------------------------- single record (eval, self-instruct)

def render(template: Template, instruction: str, input: str = "", system: str = "",
           history: Sequence[Mapping[str, str]] = (), output: str | None = None, tokenizer: Any = None,
           *, variant: int = 0, tools: str = "", tool_turns: Sequence[Mapping[str, str]] = (),
           think: ThinkPolicy | str = ThinkPolicy.keep) -> tuple[str, str]:
    """(prompt, response) for one record, identical to what `apply_template` gives the same record
    with the same `think` policy (dataforge.data.think).

    Without `output` the response is "" and the prompt is what a model is asked to continue.
    """
    think = policy(think)
    if think is ThinkPolicy.strip:
        history, tool_turns = strip_turns(history), strip_turns(tool_turns)
        output = None if output is None else re.sub(THINK_PATTERN, "", output, count=1)
    prompt, response = _render(template, instruction, input, system, history, output, tokenizer,
                               variant=variant, tools=tools, tool_turns=tool_turns)
    if think is ThinkPolicy.final_only and output:
        return move_to_prompt(prompt, response, output)
    return prompt, response


def _render(template: Template, instruction: str, input: str, system: str, history: Sequence[Mapping[str, str]],
            output: str | None, tokenizer: Any, *, variant: int, tools: str,
            tool_turns: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    if template.kind is TemplateKind.chat:
        messages = _chat_messages(system, history, instruction, input, tool_turns)
        prompt = _apply_chat(tokenizer, template, [messages], add_generation_prompt=True, tools=tools)[0]
        if output is None:
            return prompt, ""
        full = _apply_chat(tokenizer, template, [[*messages, {"role": "assistant", "content": output}]], tools=tools)[0]
        return prompt, _split_response(template, tokenizer, prompt, full, "<render>")
    spec = template.spec
    if tools or tool_turns:
        raise InputError(f"template '{template.name}' {_NO_TOOLS}", field="tools")
    _check_record_parts(template, system, history)
    header = spec.headers[variant] if spec.headers else None
    fields = {
        "instruction": instruction,
        "input": input,
        "system": spec.system.format(system=system) if system and spec.system else "",
        "history": "".join(spec.history[m["role"]].format(content=m["content"] or "") for m in history),
        "header": (header.with_input if input != "" else header.no_input) if header else "",
    }
    prompt = (spec.prompt if input != "" else spec.prompt_no_input).format(**fields)
    return prompt, "" if output is None else spec.response.format(output=output)


def _check_record_parts(template: Template, system: str, history: Sequence[Mapping[str, str]]) -> None:
    spec = template.spec
    if system and spec.system is None:
        raise InputError(f"template '{template.name}' has no place for a system message", field="system")
    for m in history:
        if m["role"] not in spec.history:
            raise InputError(f"template '{template.name}' has no format for history role '{m['role']}' "
                             f"(declared: {', '.join(spec.history) or 'none'})", field="history")


# ---------------------------------------------------------------- whole frames (the build)

def apply_template(records: pl.DataFrame, template: Template, *, seed: int, variants: bool,
                   tokenizer: Any = None, think: ThinkPolicy | str = ThinkPolicy.keep) -> pl.DataFrame:
    """Add `prompt`, `response` and `template_variant` columns, with `think` applied (dataforge.data.think).

    With `variants`, each record's header is chosen by xxh3 of (seed, content_hash), so the choice
    depends only on the record's content and the seed: it survives reordering, resampling and reruns.
    """
    think = policy(think)
    rendered = _apply_template(strip_frame(records) if think is ThinkPolicy.strip else records, template,
                               seed=seed, variants=variants, tokenizer=tokenizer)
    if think is not ThinkPolicy.final_only:
        return rendered
    prompts, responses = rendered[PROMPT].to_list(), rendered[RESPONSE].to_list()
    kinds = _column(records, "kind")
    for i, output in enumerate(records["output"].to_list()):
        if kinds[i] != KIND_TEXT and output and "<think>" in output:
            prompts[i], responses[i] = move_to_prompt(prompts[i], responses[i], output)
    return rendered.with_columns(pl.Series(PROMPT, prompts, dtype=pl.Utf8), pl.Series(RESPONSE, responses, dtype=pl.Utf8))


def _column(records: pl.DataFrame, name: str) -> list:
    return records[name].to_list() if name in records.columns else [None] * records.height


def _apply_template(records: pl.DataFrame, template: Template, *, seed: int, variants: bool,
                    tokenizer: Any) -> pl.DataFrame:
    variant = _variant_indices(records, template, seed=seed, variants=variants)
    plain_text = _text(records, "kind") == KIND_TEXT
    if template.kind is TemplateKind.chat:
        prompts, responses = _render_chat_frame(records, template, tokenizer)
        return records.with_columns(pl.Series(PROMPT, prompts, dtype=pl.Utf8),
                                    pl.Series(RESPONSE, responses, dtype=pl.Utf8), variant)
    _check_frame_parts(records.filter(~plain_text), template)
    spec = template.spec
    inp = _text(records, "input")
    fields = {
        "instruction": _text(records, "instruction"),
        "input": inp,
        "system": _system_expr(records, spec),
        "history": _history_expr(records, spec),
    }
    if spec.headers:
        v = pl.col(TEMPLATE_VARIANT)
        fields["header"] = pl.when(inp != "").then(
            v.replace_strict({i: h.with_input for i, h in enumerate(spec.headers)}, return_dtype=pl.Utf8)
        ).otherwise(v.replace_strict({i: h.no_input for i, h in enumerate(spec.headers)}, return_dtype=pl.Utf8))
    prompt = pl.when(inp != "").then(_format_expr(spec.prompt, fields)).otherwise(
        _format_expr(spec.prompt_no_input, fields))
    response = _format_expr(spec.response, {"output": _text(records, "output")})
    prompt = pl.when(plain_text).then(pl.lit("")).otherwise(prompt)
    response = pl.when(plain_text).then(_text(records, "output")).otherwise(response)
    return records.with_columns(variant).with_columns(prompt.alias(PROMPT), response.alias(RESPONSE))


def _text(records: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).fill_null("") if name in records.columns else pl.lit("")


def _format_expr(fmt: str, fields: Mapping[str, pl.Expr]) -> pl.Expr:
    """A str.format string as one polars concat_str over literal pieces and field expressions."""
    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(fmt):
        if literal:
            parts.append(pl.lit(literal))
        if name is not None:
            parts.append(fields[name])
    return pl.concat_str(parts) if parts else pl.lit("")


def _system_expr(records: pl.DataFrame, spec: TemplateSpec) -> pl.Expr:
    system = _text(records, "system")
    if spec.system is None:
        return pl.lit("")
    return pl.when(system != "").then(_format_expr(spec.system, {"system": system})).otherwise(pl.lit(""))


def _history_expr(records: pl.DataFrame, spec: TemplateSpec) -> pl.Expr:
    if "history" not in records.columns or not spec.history:
        return pl.lit("")
    role = pl.element().struct.field("role")
    content = pl.element().struct.field("content").fill_null("")
    turn = None
    for name, fmt in spec.history.items():
        e = _format_expr(fmt, {"content": content})
        turn = pl.when(role == name).then(e) if turn is None else turn.when(role == name).then(e)
    return pl.col("history").list.eval(turn.otherwise(pl.lit(None))).list.join("").fill_null("")


def _check_frame_parts(records: pl.DataFrame, template: Template) -> None:
    """Refuse records whose tools, system message or history turns the template cannot place."""
    spec = template.spec
    if "tools" in records.columns:
        has_tools = (pl.col("tools").fill_null("") != "") | (pl.col("tool_turns").list.len().fill_null(0) > 0)
        _raise_first(records, has_tools, template, "tools", _NO_TOOLS)
    if "system" in records.columns and spec.system is None:
        _raise_first(records, pl.col("system").fill_null("") != "", template, "system",
                     "has no place for a system message")
    if "history" in records.columns:
        declared = list(spec.history)
        bad = pl.col("history").list.eval(~pl.element().struct.field("role").is_in(declared)).list.any().fill_null(False)
        _raise_first(records, bad, template, "history",
                     f"has no format for one of this record's history roles (declared: {', '.join(declared) or 'none'})")


def _raise_first(records: pl.DataFrame, bad: pl.Expr, template: Template, field: str, what: str) -> None:
    hit = records.with_row_index("_row").filter(bad).head(1)
    if hit.height:
        row = hit.row(0, named=True)
        raise InputError(f"record {row.get('id', row['_row'])}: template '{template.name}' {what}",
                         file=row.get("origin_file"), line=row.get("origin_line"), field=field)


def _variant_indices(records: pl.DataFrame, template: Template, *, seed: int, variants: bool) -> pl.Series:
    if not variants:
        return pl.Series(TEMPLATE_VARIANT, [0] * records.height, dtype=pl.Int32)
    n = template.n_variants
    if n < 2:
        raise ConfigError(f"template.variants: template '{template.name}' declares no header variants")
    if CONTENT_HASH not in records.columns:
        raise ValueError(f"template variants are keyed by '{CONTENT_HASH}', which the clean stage adds; "
                         "run clean before template")
    prefix = f"{seed}:".encode()
    picks = [xxhash.xxh3_64_intdigest(prefix + h.encode()) % n for h in records[CONTENT_HASH].to_list()]
    return pl.Series(TEMPLATE_VARIANT, picks, dtype=pl.Int32)


# ---------------------------------------------------------------- chat templates

def _chat_messages(system: str, history: Sequence[Mapping[str, str]], instruction: str, input: str,
                   tool_turns: Sequence[Mapping[str, str]] = ()) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": m["role"], "content": m["content"] or ""} for m in history]
    user = f"{instruction}\n\n{input}" if input else instruction
    return [*messages, {"role": "user", "content": user},
            *({"role": m["role"], "content": m["content"] or ""} for m in tool_turns)]


def _apply_chat(tokenizer: Any, template: Template, conversations: list[list[dict]], *,
                add_generation_prompt: bool = False, tools: str = "") -> list[str]:
    """The tokenizer's chat template over `conversations`; `tools` (JSON text) goes to its `tools=`,
    and only to a chat template that reads them, since any other would drop them without a word."""
    chat_template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not chat_template:
        what = "no tokenizer was given" if tokenizer is None else \
            f"tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' has no chat_template"
        raise ConfigError(f"template.name: template '{template.name}' renders with the tokenizer's chat "
                          f"template, but {what}")
    from jinja2.exceptions import SecurityError, TemplateError

    if tools and "tools" not in str(chat_template):
        raise ConfigError(f"tokenize.tokenizer: the chat template of tokenizer "
                          f"'{getattr(tokenizer, 'name_or_path', '?')}' does not render tool schemas, and this data "
                          "has tools; use a tokenizer whose chat template reads `tools`, or leave the field out on "
                          "purpose with the input's `ignore_fields: [tools]`")
    extra = {"tools": json.loads(tools)} if tools else {}
    try:
        return tokenizer.apply_chat_template(conversations, tokenize=False,
                                             add_generation_prompt=add_generation_prompt, **extra)
    except TemplateError as exc:  # the tokenizer's own template refused (raise_exception) or broke the sandbox
        why = "tries what the jinja sandbox forbids" if isinstance(exc, SecurityError) else "failed"
        raise ConfigError(f"template.name: template '{template.name}' renders with the chat template of tokenizer "
                          f"'{getattr(tokenizer, 'name_or_path', '?')}', and that chat template {why}: "
                          f"{type(exc).__name__}: {exc}") from None


def _split_response(template: Template, tokenizer: Any, prompt: str, full: str, record_id: str) -> str:
    """The rendered conversation after the prompt; fails when the prompt is not a prefix of it,
    since the loss mask would then cover text the model is never shown at inference."""
    if full.startswith(prompt):
        return full[len(prompt):]
    at = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), min(len(prompt), len(full)))
    raise ConfigError(
        f"template.name: template '{template.name}' with the chat template of tokenizer "
        f"'{getattr(tokenizer, 'name_or_path', '?')}' does not render the prompt as a prefix of the whole "
        f"conversation (record {record_id}, first difference at character {at}: prompt "
        f"{prompt[max(0, at - 20):at + 20]!r} vs conversation {full[max(0, at - 20):at + 20]!r}); the response "
        f"cannot be separated from the prompt. Use a text template file instead.")


def _render_chat_frame(records: pl.DataFrame, template: Template, tokenizer: Any,
                       batch_size: int = 1024) -> tuple[list[str], list[str]]:
    """Prompts and responses of a frame through the chat template, in batches of records that share
    their tools (the template's `tools=` is one argument per call); plain-text records pass as text."""
    prompts: list[str] = []
    responses: list[str] = []
    cols = [c for c in ("id", "system", "history", "instruction", "input", "output", "tools", "tool_turns", "kind")
            if c in records.columns]
    for start in range(0, records.height, batch_size):
        rows = records.slice(start, batch_size).select(cols).to_dicts()
        batch_prompts = [""] * len(rows)
        batch_responses = [r.get("output") or "" for r in rows]
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            if r.get("kind") != KIND_TEXT:
                groups.setdefault(r.get("tools") or "", []).append(i)
        for tools, members in groups.items():
            convs = [_chat_messages(rows[i].get("system") or "", rows[i].get("history") or (),
                                    rows[i].get("instruction") or "", rows[i].get("input") or "",
                                    rows[i].get("tool_turns") or ()) for i in members]
            heads = _apply_chat(tokenizer, template, convs, add_generation_prompt=True, tools=tools)
            fulls = _apply_chat(tokenizer, template,
                                [[*c, {"role": "assistant", "content": rows[i].get("output") or ""}]
                                 for c, i in zip(convs, members, strict=True)], tools=tools)
            for i, p, f in zip(members, heads, fulls, strict=True):
                batch_prompts[i] = p
                batch_responses[i] = _split_response(template, tokenizer, p, f, rows[i].get("id", str(start + i)))
        prompts.extend(batch_prompts)
        responses.extend(batch_responses)
    return prompts, responses

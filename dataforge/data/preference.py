"""Preference formats: one raw record as one or more preference pairs (or one KTO example).

The unit a preference build counts is the pair (for KTO inputs: the labelled completion). A record
that makes one pair is one pair read; a ranked record with K completions is as many pairs read as
the `preference.pairs` rule draws from it (C(K,2), K-1 or 1), each kept or rejected on its own, so
`read = kept + rejected` per source still holds when records expand, and a tied pair is a pair read
and rejected as `tie`. A record that cannot make any pair at all (a missing field, a wrong type) is
one pair read, rejected once, like a self-instruct seed without instances (dataforge.data.formats).
The manifest's `preference.records` gives the records behind the pairs.

Formats (`InputSpec.format`), with the field names a `columns` mapping can rename:
- pairwise: `chosen` and `rejected` (strings) beside Alpaca fields (`instruction`, `input`, `system`,
  `history`), a `prompt` string, or a conversation (`conversations` / `messages`, or TRL's `prompt` as a
  list of messages) that ends on the user turn; there `chosen` / `rejected` may also be one assistant
  message ({from, value} or {role, content}, alone or in a one-message list), as LLaMA-Factory's
  ranking datasets and TRL's conversational datasets store them.
- ranked: the prompt as above and `completions`: a list of {text, rank} or {text, score} objects, or
  of strings with a parallel `ranks` or `scores` list. Rank 1 is best; a higher score is better.
  Pairs are formed by `preference.pairs`: all, best_vs_rest, best_vs_worst ("best" and "worst" are
  the first completion in the list among those that share the top or bottom value).
- hh: `chosen` and `rejected` full transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") that share the
  prompt. The prompt is the longest common prefix cut back to the end of its last "Assistant:"
  marker (so two answers that start alike are not cut mid-answer); its turns become the history and
  the instruction.
- kto: the prompt as above with `completion` (or a conversation ending on the assistant turn) and a
  boolean `label` (`kto_tag` as LLaMA-Factory calls it). A label that is not true or false is refused.
- ab: rows of a rated `dataforge export-ab` sheet (`prompt`, `output_1`, `output_2`, `preference`,
  `reference`): "1" or "2" make one pair with that output chosen; "tie" is rejected as `tie` and
  an unrated row as `unrated` (a tie says neither answer is better, so no pair can teach a
  preference); "both_bad" is rejected as `both_bad`, or with `preference.ab_both_bad: reference`
  makes the reference answer chosen over each output (two pairs). Cells are unescaped as
  `export-ab` escaped them.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from typing import NamedTuple

from dataforge.config.build import BothBadRule, InputFormat, PairRule, PreferenceConfig
from dataforge.data.conversations import RecordProblem, check_str, conversation, describe
from dataforge.data.formats import FieldNames, to_canonical
from dataforge.data.record import Canonical
from dataforge.util.cells import normalize_rating, unescape_cell

# Fields each preference format reads (besides the prompt fields of PROMPT_FIELDS).
PROMPT_FIELDS = ("instruction", "input", "system", "history", "conversations", "messages", "tools", "prompt")
USED = {
    InputFormat.pairwise: ("chosen", "rejected"),
    InputFormat.ranked: ("completions", "ranks", "scores"),
    InputFormat.hh: ("chosen", "rejected"),
    InputFormat.kto: ("completion", "output", "label", "kto_tag"),
    InputFormat.ab: ("item", "task", "prompt", "reference", "output_1", "output_2", "preference", "comment", "rater"),
}
# Reasons that are rules of the data, not faults: dropped with their reason even under `on_error: fail`.
NO_PREFERENCE = frozenset({"tie", "unrated", "both_bad"})
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")


class Pair(NamedTuple):
    """One preference example: the prompt (and chosen text) in `record`, the rejected text, a KTO label
    (None for pairs) and the id suffix that tells the pairs of one record apart."""

    record: Canonical
    rejected: str
    kto_label: bool | None = None
    suffix: str = ""


def used_fields(fmt: InputFormat, names: FieldNames, columns: dict[str, str]) -> set[str]:
    """The record fields format `fmt` reads; any other field with a value is reported as ignored."""
    prompt = {names[c] if c in names.names else columns.get(c, c) for c in PROMPT_FIELDS}
    return (prompt if fmt not in (InputFormat.ab, InputFormat.hh) else set()) | {columns.get(c, c) for c in USED[fmt]}


def to_pairs(value: dict, fmt: InputFormat, names: FieldNames, columns: dict[str, str], cfg: PreferenceConfig,
             missing: str) -> list[Pair | RecordProblem]:
    """The pairs (or KTO example) of one raw record; raises RecordProblem when it makes none at all."""
    def name(c: str) -> str:
        return names[c] if c in names.names else columns.get(c, c)

    if fmt is InputFormat.hh:
        return [_hh(value, name("chosen"), name("rejected"), missing)]
    if fmt is InputFormat.ab:
        return _ab(value, cfg, missing)
    if fmt is InputFormat.pairwise:
        chosen_name, rejected_name = name("chosen"), name("rejected")
        prompt = _prompt(value, names, name("prompt"), missing, answer=_answer(value, chosen_name, missing))
        rejected = _answer(value, rejected_name, missing)
        return [Pair(prompt, rejected)]
    if fmt is InputFormat.kto:
        return [_kto(value, names, name, missing)]
    return _ranked(value, names, name, cfg.pairs, missing)


def _prompt(value: dict, names: FieldNames, prompt_name: str, missing: str, answer: str) -> Canonical:
    """The record's prompt, as a canonical record whose output is `answer`: a conversation
    (`conversations`, `messages`, or TRL's `prompt` as a list of messages), a `prompt` string, or
    Alpaca fields."""
    prompt = value.get(prompt_name)
    prompt_turns = isinstance(prompt, list) and value.get(names["instruction"]) is None
    for name, role_key, content_key, roles in (
            (names["conversations"], "from", "value", names.sharegpt_roles),
            (names["messages"], "role", "content", names.message_roles),
            *([(prompt_name, "role", "content", names.message_roles)] if prompt_turns else [])):
        turns = value.get(name)
        if turns is None:
            continue
        if not isinstance(turns, list):
            raise RecordProblem("wrong_type", f"expected a list of turns, got {describe(turns)}", name)
        last = turns[-1] if turns and isinstance(turns[-1], dict) else {}
        if roles.get(str(last.get(role_key, "")).lower()) == "assistant":
            raise RecordProblem("bad_turn_order", "the conversation ends with an assistant turn; it must end on the "
                                                  "user turn that the answers reply to", name)
        reply = {role_key: "gpt" if role_key == "from" else "assistant", content_key: answer}
        return conversation({**value, name: [*turns, reply]}, name, role_key, content_key, roles, missing,
                            system_name=names["system"], tools_name=names["tools"], unused=set())
    if prompt is not None and value.get(names["instruction"]) is None:
        return Canonical("", [], check_str(prompt, prompt_name), "", answer)
    shaped = {k: v for k, v in value.items() if k in (names["instruction"], names["input"], names["system"], names["history"])}
    return to_canonical({**shaped, names["output"]: answer}, InputFormat.alpaca, names, missing)[0]  # type: ignore[return-value]


def _answer(value: dict, name: str, missing: str) -> str:
    """A completion: a string, or one assistant message ({from, value} / {role, content}), alone or as
    a one-message list (TRL's conversational form)."""
    v = value.get(name)
    if v is None:
        raise RecordProblem("missing_field", missing, name)
    if isinstance(v, list) and len(v) == 1:
        return _answer({name: v[0]}, name, missing)
    if isinstance(v, dict):
        for role_key, content_key in (("from", "value"), ("role", "content")):
            if content_key in v:
                if v.get(role_key) not in (None, "gpt", "assistant"):
                    raise RecordProblem("wrong_type", f"expected an assistant message, got role {v.get(role_key)!r}",
                                        f"{name}.{role_key}")
                if v[content_key] is None:
                    raise RecordProblem("missing_field", missing, f"{name}.{content_key}")
                return check_str(v[content_key], f"{name}.{content_key}")
        raise RecordProblem("wrong_type", f"expected a string or an assistant message, got {describe(v)}", name)
    return check_str(v, name)


def _kto(value: dict, names: FieldNames, name: Callable[[str], str], missing: str) -> Pair:
    label_name = name("label") if value.get(name("label")) is not None or value.get("kto_tag") is None else "kto_tag"
    label = value.get(label_name)
    if label is None:
        raise RecordProblem("missing_field", missing, name("label"))
    if not isinstance(label, bool):
        raise RecordProblem("wrong_type", f"expected true or false, got {describe(label)}", label_name)
    conv = value.get(names["conversations"]) is not None or value.get(names["messages"]) is not None
    if conv and value.get(name("completion")) is None:
        fmt = InputFormat.sharegpt if value.get(names["conversations"]) is not None else InputFormat.messages
        shaped = {k: v for k, v in value.items() if k in (names["conversations"], names["messages"], names["system"], names["tools"])}
        return Pair(to_canonical(shaped, fmt, names, missing)[0], "", label)  # type: ignore[arg-type]
    completion_name = name("completion") if value.get(name("completion")) is not None or value.get(names["output"]) is None \
        else names["output"]
    completion = _answer(value, completion_name, missing)
    return Pair(_prompt(value, names, name("prompt"), missing, completion), "", label)


def _ranked(value: dict, names: FieldNames, name: Callable[[str], str], rule: PairRule,
            missing: str) -> list[Pair | RecordProblem]:
    cname = name("completions")
    completions = value.get(cname)
    if completions is None:
        raise RecordProblem("missing_field", missing, cname)
    if not isinstance(completions, list):
        raise RecordProblem("wrong_type", f"expected a list of completions, got {describe(completions)}", cname)
    if len(completions) < 2:
        raise RecordProblem("too_few_completions", f"holds {len(completions)} completion(s); a pair needs 2", cname)
    texts, keys = [], []   # keys: higher is better
    parallel = next((k for k in (name("ranks"), name("scores")) if value.get(k) is not None), None)
    if parallel is not None and not isinstance(value[parallel], list):
        raise RecordProblem("wrong_type", f"expected a list, got {describe(value[parallel])}", parallel)
    if parallel is not None and len(value[parallel]) != len(completions):
        raise RecordProblem("wrong_type", f"holds {len(value[parallel])} values for {len(completions)} completions",
                            parallel)
    for i, c in enumerate(completions):
        where = f"{cname}[{i}]"
        if parallel is not None:
            texts.append(check_str(c, where) if c is not None else _missing(missing, where))
            keys.append(_order_key(value[parallel][i], f"{parallel}[{i}]", rank=parallel == name("ranks")))
            continue
        if not isinstance(c, dict):
            raise RecordProblem("wrong_type", f"expected a {{text, rank}} or {{text, score}} object (or strings with a "
                                              f"`ranks`/`scores` list), got {describe(c)}", where)
        if c.get("text") is None:
            raise RecordProblem("missing_field", missing, f"{where}.text")
        texts.append(check_str(c["text"], f"{where}.text"))
        by = "rank" if c.get("rank") is not None else "score"
        if c.get(by) is None:
            raise RecordProblem("missing_field", f"{missing}; a completion needs a rank or a score", f"{where}.rank")
        keys.append(_order_key(c[by], f"{where}.{by}", rank=by == "rank"))
    prompt = _prompt(value, names, name("prompt"), missing, answer="")
    return [_ranked_pair(prompt, texts, keys, i, j) for i, j in candidate_pairs(keys, rule)]


def candidate_pairs(keys: list[float], rule: PairRule) -> list[tuple[int, int]]:
    """(better, worse) index pairs by `rule`; a tied pair keeps list order (it is rejected as a tie)."""
    best = max(range(len(keys)), key=lambda i: (keys[i], -i))
    if rule is PairRule.best_vs_rest:
        return [(best, j) for j in range(len(keys)) if j != best]
    if rule is PairRule.best_vs_worst:
        return [(best, min(range(len(keys)), key=lambda i: (keys[i], i)))]
    return [(i, j) if keys[i] >= keys[j] else (j, i) for i, j in itertools.combinations(range(len(keys)), 2)]


def _ranked_pair(prompt: Canonical, texts: list[str], keys: list[float], i: int, j: int) -> Pair | RecordProblem:
    if keys[i] == keys[j]:
        problem = RecordProblem("tie", f"completions {i} and {j} rank or score the same, so neither is preferred",
                                f"completions[{j}]")
        problem.suffix = f"#{i}>{j}"
        return problem
    return Pair(prompt._replace(output=texts[i]), texts[j], None, f"#{i}>{j}")


def _order_key(v: object, where: str, rank: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise RecordProblem("wrong_type", f"expected a number, got {describe(v)}", where)
    return -float(v) if rank else float(v)


def _missing(missing: str, where: str) -> str:
    raise RecordProblem("missing_field", missing, where)


def _hh(value: dict, chosen_name: str, rejected_name: str, missing: str) -> Pair:
    chosen, rejected = (_answer(value, n, missing) for n in (chosen_name, rejected_name))
    shared = len(_common_prefix(chosen, rejected))
    cut = chosen.rfind(ASSISTANT, 0, shared)
    if cut < 0:
        raise RecordProblem("no_shared_prompt", f"'{chosen_name}' and '{rejected_name}' share no prompt ending in "
                                                f"{ASSISTANT.strip()!r} (shared prefix: {shared} characters)", chosen_name)
    end = cut + len(ASSISTANT)
    for name, text in ((chosen_name, chosen), (rejected_name, rejected)):
        if _HH_TURN.search(text, end):
            raise RecordProblem("no_shared_prompt", f"'{chosen_name}' and '{rejected_name}' part before their last "
                                                    "Assistant turn, so they answer different conversations", name)
    turns = _hh_turns(chosen[:cut], chosen_name)
    return Pair(Canonical("", turns[:-1], turns[-1]["content"], "", chosen[end:].strip()), rejected[end:].strip())


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    k = next((i for i in range(n) if a[i] != b[i]), n)
    return a[:k]


def _hh_turns(prompt: str, field: str) -> list[dict]:
    """The Human/Assistant turns of a transcript's prompt; it must end on a Human turn."""
    marks = list(_HH_TURN.finditer(prompt))
    if not marks or prompt[:marks[0].start()].strip():
        raise RecordProblem("no_user_turn", f"the prompt does not start with {HUMAN.strip()!r}", field)
    turns = []
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(prompt)
        turns.append({"role": "user" if m.group(1) == "Human" else "assistant", "content": prompt[m.end():end].strip()})
    if turns[-1]["role"] != "user":
        raise RecordProblem("bad_turn_order", "the last turn before the answers is not a Human turn", field)
    return turns


def _ab(value: dict, cfg: PreferenceConfig, missing: str) -> list[Pair | RecordProblem]:
    def cell(name: str, required: bool = True) -> str:
        v = value.get(name)
        if v is None or v == "":
            if required:
                raise RecordProblem("missing_field", missing, name)
            return ""
        return unescape_cell(check_str(v, name))

    rating = normalize_rating(cell("preference", required=False))
    prompt = Canonical("", [], cell("prompt"), "", "")
    first, second = cell("output_1"), cell("output_2")
    if rating in ("1", "2"):
        chosen, rejected = (first, second) if rating == "1" else (second, first)
        return [Pair(prompt._replace(output=chosen), rejected)]
    if rating == "":
        raise RecordProblem("unrated", "the row has no rating, so it holds no preference", "preference")
    if rating == "tie":
        raise RecordProblem("tie", "rated a tie: neither output is preferred", "preference")
    if rating != "both_bad":
        raise RecordProblem("wrong_type", f"{rating!r} is not a rating; expected 1, 2, tie, both_bad or blank",
                            "preference")
    reference = cell("reference", required=False)
    if cfg.ab_both_bad is BothBadRule.drop or not reference:
        why = "" if cfg.ab_both_bad is BothBadRule.drop else " and the row has no reference answer to prefer"
        raise RecordProblem("both_bad", f"rated both_bad: neither output is preferred{why}", "preference")
    return [Pair(prompt._replace(output=reference), first, None, "#ref>1"),
            Pair(prompt._replace(output=reference), second, None, "#ref>2")]

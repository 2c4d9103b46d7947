"""Multiple-choice scoring with lm-evaluation-harness's definitions of acc and acc_norm.

A question is a context and a list of choices. Each choice is scored as the continuation
" " + choice after the context (its loglikelihood, summed over the continuation's tokens), so:

- acc: the highest loglikelihood is the gold choice;
- acc_norm: the highest loglikelihood divided by the choice's length in characters is the gold one;
- ties go to the first index (numpy argmax), exactly as lm-eval.

Few-shot examples come from one seeded `random.Random` whose state carries from doc to doc (or the
first k examples, for `first_n`), so a k-shot task is deterministic and equal to lm-eval's draw.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from dataforge.errors import InputError
from dataforge.eval.lm import LanguageModel
from dataforge.eval.results import sample_hash
from dataforge.eval.tasks import FewshotSampler, FewshotSpec, MultipleChoiceTask, Records, Task, read_records

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class DocView:
    """One record as a question: the text before the answer, the choices, and the gold answer(s)."""

    query: str
    choices: tuple[str, ...]
    gold: int
    true_choices: tuple[int, ...] | None = None    # TruthfulQA MC2: every true answer
    description: str = ""                          # put before the examples (MMLU names the subject)
    info: dict = field(default_factory=dict)       # carried into the sample row (e.g. subject)

    @property
    def answer(self) -> str:
        return self.choices[self.gold]


@dataclass(frozen=True)
class Question:
    """A fully built question: the exact context string the model sees, and what to score."""

    context: str
    view: DocView
    origin: str
    line: int

    def requests(self) -> list[tuple[str, str]]:
        return [(self.context, TARGET_DELIMITER + c) for c in self.view.choices]


Viewer = Callable[[dict], DocView]


class BadField(ValueError):
    """Raised by a viewer for a malformed record field; becomes an InputError naming file and line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_view(view: DocView, origin: str, line: int, gold_field: str = "gold") -> DocView:
    """A gold answer outside the choices, or an empty choice list, is bad input, never a silent zero."""
    if not view.choices:
        raise InputError("no choices", file=origin, line=line, field="choices")
    for i, c in enumerate(view.choices):
        if not isinstance(c, str):
            raise InputError(f"choice {i} is {type(c).__name__}, not text", file=origin, line=line, field="choices")
    golds = view.true_choices if view.true_choices is not None else (view.gold,)
    for g in (view.gold, *golds):
        if not 0 <= g < len(view.choices):
            raise InputError(f"gold answer {g} is outside the {len(view.choices)} choices",
                             file=origin, line=line, field=gold_field)
    return view


def fields_viewer(task: MultipleChoiceTask) -> Viewer:
    """The `fields` format: a prompt with {field} placeholders, a choices field and a gold field."""
    names = [n for _, n, _, _ in string.Formatter().parse(task.prompt or "") if n]

    def view(doc: dict) -> DocView:
        missing = [n for n in (*names, task.choices, task.gold) if n not in doc]
        if missing:
            raise KeyError(missing[0])
        choices = doc[task.choices]
        if not isinstance(choices, list):
            raise BadField(task.choices, "must be a list of choice texts")
        gold = doc[task.gold]
        if isinstance(gold, str) and not gold.lstrip("-").isdigit():
            if gold not in choices:
                raise BadField(task.gold, f"gold answer {gold!r} is not one of the choices")
            gold = choices.index(gold)
        return DocView(query=task.prompt.format_map({n: doc[n] for n in names}), choices=tuple(choices),
                       gold=int(gold), description=task.description)

    return view


def view_records(records: Records, viewer: Viewer, gold_field: str) -> list[DocView]:
    """Apply a viewer to every row, turning a missing or malformed field into an InputError there."""
    out = []
    for i, doc in enumerate(records.rows):
        origin, line = records.where(i)
        try:
            v = viewer(doc)
        except KeyError as exc:
            raise InputError("missing field", file=origin, line=line, field=str(exc.args[0])) from None
        except BadField as exc:
            raise InputError(str(exc), file=origin, line=line, field=exc.field) from None
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise InputError(str(exc), file=origin, line=line, field=gold_field) from None
        out.append(check_view(v, origin, line, gold_field))
    return out


class ShotSampler:
    """lm-eval's few-shot draw: `random.Random(seed).sample` per doc with the state carried over, or
    the first k. With `exclude_eval_doc` it draws k+1 and drops the scored doc, as lm-eval does when
    a task's few-shot split equals its test split (HellaSwag's are both unset)."""

    def __init__(self, pool: Sequence[tuple[dict, DocView]], spec: FewshotSpec):
        self.pool = list(pool)
        self.spec = spec
        self.rnd = random.Random(spec.seed)

    def sample(self, k: int, eval_doc: dict) -> list[DocView]:
        if k == 0:
            return []
        if self.spec.sampler is FewshotSampler.first_n:
            kept = [v for d, v in self.pool if not (self.spec.exclude_eval_doc and d == eval_doc)]
            return kept[:k]
        if not self.spec.exclude_eval_doc:
            return [v for _, v in self.rnd.sample(self.pool, k)]
        drawn = [(d, v) for d, v in self.rnd.sample(self.pool, k + 1) if d != eval_doc][:k]
        if len(drawn) < k:
            drawn = self.rnd.sample([(d, v) for d, v in self.pool if d != eval_doc], k)
        return [v for _, v in drawn]


def build_context(view: DocView, shots: Sequence[DocView]) -> str:
    """description + each example as `query answer\\n\\n` + the query: lm-eval's plain-text context."""
    parts = [view.description]
    for s in shots:
        parts.append(s.query + TARGET_DELIMITER + s.answer + FEWSHOT_DELIMITER)
    parts.append(view.query)
    return "".join(parts)


def build_questions(task: MultipleChoiceTask, evals: Records, views: Sequence[DocView],
                    fewshot: Records | None, fewshot_views: Sequence[DocView] | None) -> list[Question]:
    """Questions in file order, drawing each one's examples in that same order (the draw is stateful)."""
    k, spec = task.shots, task.fewshot
    samplers: dict[object, ShotSampler] = {}
    if k:
        assert fewshot is not None and fewshot_views is not None
        pools: dict[object, list[tuple[dict, DocView]]] = {}
        for i, (doc, v) in enumerate(zip(fewshot.rows, fewshot_views, strict=True)):
            key = _group_key(doc, spec.group_by, fewshot, i)
            pools.setdefault(key, []).append((doc, v))
        samplers = {key: ShotSampler(pool, spec) for key, pool in pools.items()}
    out = []
    for i, (doc, view) in enumerate(zip(evals.rows, views, strict=True)):
        origin, line = evals.where(i)
        shots: list[DocView] = []
        if k:
            key = _group_key(doc, spec.group_by, evals, i)
            sampler = samplers.get(key)
            available = 0 if sampler is None else len(sampler.pool) - (1 if spec.exclude_eval_doc else 0)
            if sampler is None or available < k:
                group = f" with {spec.group_by} = {key!r}" if spec.group_by else ""
                raise InputError(f"{k} examples needed from split '{spec.split}'{group}, "
                                 f"but only {max(available, 0)} there", file=origin, line=line,
                                 field=spec.group_by or "shots")
            shots = sampler.sample(k, doc)
        out.append(Question(context=build_context(view, shots), view=view, origin=origin, line=line))
    return out


def load_questions(task: Task, viewer: Viewer, gold_field: str) -> list[Question]:
    """Read a multiple-choice task's records (and its few-shot split) and build every question."""
    spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
    evals = read_records(task)
    views = view_records(evals, viewer, gold_field)
    fewshot = fewshot_views = None
    if spec.shots:
        fewshot = read_records(task, spec.fewshot.split)
        fewshot_views = view_records(fewshot, viewer, gold_field)
    return build_questions(spec, evals, views, fewshot, fewshot_views)


def _group_key(doc: dict, group_by: str | None, records: Records, i: int) -> object:
    if group_by is None:
        return None
    if group_by not in doc:
        origin, line = records.where(i)
        raise InputError("missing field (fewshot.group_by)", file=origin, line=line, field=group_by)
    return doc[group_by]


def choice_scores(ll: Sequence[float], view: DocView) -> dict:
    """pred, pred_norm and the per-sample metrics for one question's choice loglikelihoods."""
    lls = np.asarray(ll, dtype=np.float64)
    lengths = np.array([float(len(c)) for c in view.choices])
    pred = int(np.argmax(lls))
    pred_norm = int(np.argmax(lls / lengths))
    metrics = {"acc": float(pred == view.gold), "acc_norm": float(pred_norm == view.gold)}
    if view.true_choices is not None:
        probs = np.exp(lls)
        true = np.zeros(len(lls), dtype=bool)
        true[list(view.true_choices)] = True
        metrics = {"mc2": float(probs[true].sum() / probs.sum())}
    return {"pred": pred, "pred_norm": pred_norm, "metrics": metrics}


def score_questions(lm: LanguageModel, questions: Sequence[Question],
                    progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """Per-question choice loglikelihoods; all requests go to the model in one call so it can sort,
    batch and share each context across its choices."""
    flat = [r for q in questions for r in q.requests()]
    lls = lm.loglikelihood(flat, progress=progress)
    out, pos = [], 0
    for q in questions:
        n = len(q.view.choices)
        out.append(lls[pos:pos + n])
        pos += n
    return out


def macro_weights(groups: Sequence[object]) -> list[float]:
    """Per-sample weights whose weighted mean is the unweighted mean of the group means.

    A task metric is the mean of its per-sample values; giving each sample acc * N / (G * n_group)
    makes that mean equal (1/G) * sum over groups of the group's mean acc (Open LLM Leaderboard v1's
    MMLU), while bootstrap and paired compare keep resampling plain rows.
    """
    counts: dict[object, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    n, n_groups = len(groups), len(counts)
    return [n / (n_groups * counts[g]) for g in groups]


def sample_rows(questions: Sequence[Question], lls: Sequence[Sequence[float]],
                macro_by: str | None = None) -> Iterator[dict]:
    """One results row per question: the contract's `choices`, `gold`, `ll`, `pred`, `pred_norm`, with
    the question itself (`query`, without its examples) and a `sample_id` hashed from the full context."""
    weights = macro_weights([q.view.info.get(macro_by) for q in questions]) if macro_by else None
    for i, (q, ll) in enumerate(zip(questions, lls, strict=True)):
        scored = choice_scores(ll, q.view)
        if weights is not None:
            scored["metrics"]["acc_macro"] = scored["metrics"]["acc"] * weights[i]
        yield {"sample_id": sample_hash(q.context), "query": q.view.query, "choices": list(q.view.choices),
               "gold": q.view.gold,
               **({"true_choices": list(q.view.true_choices)} if q.view.true_choices is not None else {}),
               "ll": [float(x) for x in ll], **scored, "origin": f"{q.origin}:{q.line}", **q.view.info}

"""The `multiple_choice` task type: each choice's loglikelihood after the context; acc and acc_norm."""

from __future__ import annotations

from dataforge.eval.leaderboard import viewer_for
from dataforge.eval.multiple_choice import load_questions, sample_rows, score_questions
from dataforge.eval.runner import cached_map, limit_items, request_key
from dataforge.eval.task_types import TaskContext, TaskTypeEntry
from dataforge.eval.tasks import MultipleChoiceTask, Task


def run_multiple_choice(task: Task, ctx: TaskContext) -> list[dict]:
    spec: MultipleChoiceTask = task.spec  # type: ignore[assignment]
    step = ctx.step
    questions = limit_items(load_questions(task, *viewer_for(spec)), ctx.limit)
    step.update(total=sum(len(q.view.choices) for q in questions))
    keys = [request_key("mc", q.context, q.view.choices) for q in questions]
    lls = cached_map(ctx.cache, keys, lambda idx: score_questions(ctx.lm, [questions[i] for i in idx], step.advance),
                     step.advance, [len(q.view.choices) for q in questions])
    return list(sample_rows(questions, lls, spec.macro_average_by))


def _primary(rows: list[dict]) -> str | None:
    """TruthfulQA MC2 reports mc2, the leaderboard's number for it."""
    return "mc2" if rows and "mc2" in rows[0]["metrics"] else None


ENTRY = TaskTypeEntry(name="multiple_choice", spec=MultipleChoiceTask, run=run_multiple_choice,
                      primary_metrics=("acc", "acc_norm"), primary=_primary)

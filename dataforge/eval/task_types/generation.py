"""The `generation` task type: prompt with the training template, generate greedily, score and label."""

from __future__ import annotations

from typing import Any

from dataforge.errors import InputError
from dataforge.eval.results import sample_hash
from dataforge.eval.runner import EvalTarget, cached_map, request_key
from dataforge.eval.task_types import TaskContext, TaskTypeEntry
from dataforge.eval.tasks import GenerationTask, Task, read_records
from dataforge.generate.base import SamplingParams
from dataforge.util.fieldpath import get_field


def _optional(row: dict, name: str | None, default: Any) -> Any:
    return (get_field(row, name, None) or default) if name else default


def generation_prompts(task: Task, template: Any, tokenizer: Any, limit: int | None, think: str = "keep") -> list[dict]:
    """Each record rendered with the template the model was trained with (and its `think` policy, from
    the adapter's template.json), plus its reference."""
    from dataforge.data.templates import render

    spec: GenerationTask = task.spec  # type: ignore[assignment]
    records = read_records(task)
    out = []
    for i, row in enumerate(records.rows):
        origin, line = records.where(i)
        instruction, reference = (get_field(row, name, None) for name in (spec.instruction_field, spec.reference_field))
        for name, text in ((spec.instruction_field, instruction), (spec.reference_field, reference)):
            if not isinstance(text, str):
                raise InputError("missing field" if text is None else "must be text",
                                 file=origin, line=line, field=name)
        try:
            prompt, _ = render(template, instruction, _optional(row, spec.input_field, ""),
                               _optional(row, spec.system_field, ""), _optional(row, spec.history_field, []),
                               tokenizer=tokenizer, think=think)
        except InputError as exc:
            raise InputError(exc.detail, file=origin, line=line, field=exc.field) from None
        out.append({"prompt": prompt, "reference": reference, "origin": f"{origin}:{line}"})
        if limit is not None and len(out) >= limit:
            break
    return out


def resolve_template(task: GenerationTask, target: EvalTarget):
    """The adapter's training template wins; a task's own `template:` serves models without one."""
    from dataforge.data.templates import load_template

    if target.template is not None:
        tpl = load_template(target.template["name"])
        recorded = target.template.get("sha256")
        if recorded and tpl.sha256 != recorded:
            raise InputError(f"template '{tpl.name}' changed since the adapter was trained (sha256 "
                             f"{tpl.sha256[:12]} here, {recorded[:12]} in template.json); evaluating with it "
                             f"would not use the training prompt format", file=str(tpl.path))
        return tpl
    if task.template is None:
        raise InputError(f"generation task {task.name} needs a prompt template: set `template:` in the task, "
                         f"or evaluate an adapter whose folder holds template.json")
    return load_template(task.template)


def run_generation(task: Task, ctx: TaskContext) -> list[dict]:
    from dataforge.eval.metrics import score_generation

    spec: GenerationTask = task.spec  # type: ignore[assignment]
    template = resolve_template(spec, ctx.target)
    ctx.templates[task.name] = {"name": template.name, "sha256": template.sha256}
    think = (ctx.target.template or {}).get("think", "keep")
    items = generation_prompts(task, template, ctx.tokenizer, ctx.limit, think=think)
    ctx.step.update(total=len(items))
    params = SamplingParams(temperature=0.0, max_tokens=spec.max_tokens, stop=tuple(spec.stop), seed=ctx.seed)
    keys = [request_key("generate", ctx.backend, it["prompt"], params.max_tokens, params.stop) for it in items]

    def compute(idx: list[int]) -> list[dict]:
        gens = ctx.lm.generate([items[i]["prompt"] for i in idx], params, progress=ctx.step.advance)
        return [{"text": g.text, "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens}
                for g in gens]

    outputs = cached_map(ctx.cache, keys, compute, ctx.step.advance)
    rows = [{"sample_id": sample_hash(it["prompt"]), **it, "prediction": o["text"],
             "finish_reason": o["finish_reason"], "completion_tokens": o["completion_tokens"]}
            for it, o in zip(items, outputs, strict=True)]
    return score_generation(rows, spec.scoring)


def _signatures(spec: GenerationTask) -> dict[str, str]:
    from dataforge.eval.metrics import metric_signatures

    return metric_signatures(spec.scoring)


ENTRY = TaskTypeEntry(name="generation", spec=GenerationTask, run=run_generation,
                      primary_metrics=("rougeL", "chrf", "exact_match"), signatures=_signatures, labelled=True)

"""The `preference` task type: does the model prefer the chosen answer over the rejected one?

Each record holds a prompt (instruction, optional input), a chosen and a rejected completion. The
prompt is the build's own rendering (`prompt_field`, as the tune saw it) or, for data from elsewhere,
instruction and input rendered with the tokenizer's chat template; each
completion (ending with eos) is scored by its summed log-probability, under the evaluated model and
under its reference: the base model with the adapter switched off. Per pair:

    margin        = [log p(chosen) - log p_ref(chosen)] - [log p(rejected) - log p_ref(rejected)]
                    the implicit DPO reward margin (in nats, beta = 1); 0 for the base model itself
    accuracy      = 1 if margin > 0, 0.5 on a tie, else 0: the implicit reward's held-out accuracy
    logp_accuracy = 1 if the model's own per-token log-prob of chosen beats rejected's (no reference)

All three are means of per-pair values, so the aggregate gives them bootstrap CIs and compare, gate,
history and report treat them like any other metric. The base model scores accuracy 0.5 (all ties).
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from dataforge.config.suite import TaskBase
from dataforge.errors import InputError
from dataforge.eval.results import sample_hash
from dataforge.eval.runner import cached_map, request_key
from dataforge.eval.task_types import TaskContext, TaskTypeEntry
from dataforge.eval.tasks import Task, read_records
from dataforge.util.fieldpath import get_field


class PreferenceTask(TaskBase):
    type: Literal["preference"] = Field(description="Held-out chosen/rejected pairs: accuracy and margin of the "
                                                    "implicit reward (tuned vs base log-probs), with bootstrap CIs.")
    instruction_field: str = Field("instruction", description="Record field holding the instruction.")
    input_field: str | None = Field("input", description="Record field holding the optional input; null for none.")
    chosen_field: str = Field("chosen", description="Record field holding the preferred completion.")
    rejected_field: str = Field("rejected", description="Record field holding the dispreferred completion.")
    prompt_field: str | None = Field(None, description="Record field holding the prompt exactly as the tune saw it "
                                                       "(a preference build's splits carry it as `prompt`, rendered with "
                                                       "the build's template); when set it is used as it is, else "
                                                       "instruction and input are rendered with the chat template.")


def preference_items(task: Task, tokenizer, limit: int | None) -> list[dict]:
    spec: PreferenceTask = task.spec  # type: ignore[assignment]
    records = read_records(task)
    out = []
    for i, row in enumerate(records.rows):
        origin, line = records.where(i)
        texts = {}
        for name in (spec.instruction_field, spec.chosen_field, spec.rejected_field):
            value = get_field(row, name, None)
            if not isinstance(value, str) or not value.strip():
                raise InputError("missing field" if value is None else "must be non-empty text",
                                 file=origin, line=line, field=name)
            texts[name] = value
        extra = get_field(row, spec.input_field, None) if spec.input_field else None
        user = texts[spec.instruction_field].strip() + (f"\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else "")
        rendered = get_field(row, spec.prompt_field, None) if spec.prompt_field else None
        if spec.prompt_field and not isinstance(rendered, str):
            raise InputError("missing field", file=origin, line=line, field=spec.prompt_field)
        prompt = rendered if spec.prompt_field else \
            tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)
        out.append({"prompt": prompt, "chosen": texts[spec.chosen_field].strip() + tokenizer.eos_token,
                    "rejected": texts[spec.rejected_field].strip() + tokenizer.eos_token, "origin": f"{origin}:{line}"})
        if limit is not None and len(out) >= limit:
            break
    return out


def reference_view(lm):
    """The same loaded model with its adapter off; a model without one is its own reference."""
    if not getattr(lm, "use_adapter", False) or not hasattr(lm.model, "disable_adapter"):
        return lm
    ref = copy.copy(lm)
    ref.use_adapter, ref.adapter_name = False, None
    return ref


def pair_metrics(policy: tuple[float, float], reference: tuple[float, float], tokens: tuple[int, int]) -> dict:
    margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
    own = policy[0] / max(tokens[0], 1) - policy[1] / max(tokens[1], 1)
    return {"accuracy": 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0, "margin": margin,
            "logp_accuracy": 1.0 if own > 0 else 0.5 if own == 0 else 0.0}


def run_preference(task: Task, ctx: TaskContext) -> list[dict]:
    items = preference_items(task, ctx.tokenizer, ctx.limit)
    ctx.step.update(total=2 * len(items))
    ref_lm = reference_view(ctx.lm)
    requests = [(it["prompt"], it[side]) for it in items for side in ("chosen", "rejected")]

    def scores(lm, kind: str) -> list[float]:
        keys = [request_key(kind, p, c) for p, c in requests]
        return cached_map(ctx.cache, keys, lambda idx: lm.loglikelihood([requests[i] for i in idx]),
                          lambda n: None)

    policy = scores(ctx.lm, "pref")
    reference = policy if ref_lm is ctx.lm else scores(ref_lm, "pref-ref")
    ctx.step.advance(len(requests))
    rows = []
    for i, it in enumerate(items):
        n_c = len(ctx.tokenizer(it["chosen"], add_special_tokens=False)["input_ids"])
        n_r = len(ctx.tokenizer(it["rejected"], add_special_tokens=False)["input_ids"])
        p, r = (policy[2 * i], policy[2 * i + 1]), (reference[2 * i], reference[2 * i + 1])
        rows.append({"sample_id": sample_hash(it["prompt"] + it["chosen"] + it["rejected"]), "prompt": it["prompt"],
                     "chosen": it["chosen"], "rejected": it["rejected"], "ll": list(p), "ll_reference": list(r),
                     "metrics": pair_metrics(p, r, (n_c, n_r)), "origin": it["origin"]})
    return rows


ENTRY = TaskTypeEntry(name="preference", spec=PreferenceTask, run=run_preference,
                      primary_metrics=("accuracy", "margin"))

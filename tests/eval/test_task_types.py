"""A task type is one registry entry: a toy type registered here alone runs through a whole suite."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from dataforge.config.base import StrictModel
from dataforge.errors import ConfigError
from dataforge.eval.compare import compare_results
from dataforge.eval.config import EvalOptions
from dataforge.eval.results import load_results, sample_hash
from dataforge.eval.runner import run_suite
from dataforge.eval.serving import load_targets
from dataforge.eval.task_types import (
    CorpusSums,
    TaskContext,
    TaskTypeEntry,
    get_task_type,
    register_task_type,
    unregister_task_type,
)
from dataforge.eval.tasks import DataSpec, load_suite, read_records


class AnswerTask(StrictModel):
    name: str = Field(description="Task name.")
    type: Literal["answer_ll"] = Field(description="Loglikelihood of each record's answer after its question.")
    data: DataSpec = Field(description="Where the records come from.")


def run_answer_ll(task, ctx: TaskContext) -> list[dict]:
    rows = read_records(task).rows[: ctx.limit]
    ctx.step.update(total=len(rows))
    lls = ctx.lm.loglikelihood([(r["question"], " " + r["answer"]) for r in rows])
    return [{"sample_id": sample_hash(r["question"]), "ll": ll, "n_chars": len(r["answer"]) + 1,
             "metrics": {"answer_ll": ll}} for r, ll in zip(rows, lls, strict=True)]


TOY = TaskTypeEntry(
    name="answer_ll", spec=AnswerTask, run=run_answer_ll, primary_metrics=("ll_per_char",),
    sums=CorpusSums(("ll", "n_chars"), ("ll_per_char",), lambda s: {"ll_per_char": s[:, 0] / s[:, 1]}))


@pytest.fixture
def toy_type():
    register_task_type(TOY)
    yield TOY
    unregister_task_type(TOY.name)


def _suite(tmp_path):
    records = [("The sky is", "blue"), ("Two plus two is", "four"), ("Ice is frozen", "water"), ("Cats say", "meow")]
    (tmp_path / "qa.jsonl").write_text("".join(f'{{"question": "{q}", "answer": "{a}"}}\n' for q, a in records))
    (tmp_path / "toy.yaml").write_text("name: toy\ntype: answer_ll\ndata: {path: qa.jsonl}\n")
    (tmp_path / "suite.yaml").write_text("name: toys\ntasks: [{task: toy.yaml, tag: domain}]\n")
    return tmp_path / "suite.yaml", records


def test_a_task_type_registered_in_a_test_is_scored_aggregated_and_written(tmp_path, toy_type):
    suite_path, records = _suite(tmp_path)
    options = EvalOptions(batch_size=4, device="cpu", cache_dir=None, n_boot=200, progress=False)
    targets, tok = load_targets("tiny", None, tmp_path / "res", None, options)
    run = run_suite(load_suite(suite_path), targets, options, tok)
    expected = targets[0].lm.loglikelihood([(q, " " + a) for q, a in records])
    res = load_results(tmp_path / "res")
    entry = res.task("toy")
    assert entry["type"] == "answer_ll" and entry["primary_metric"] == "ll_per_char" and entry["n"] == 4
    per_char = sum(expected) / sum(len(a) + 1 for _, a in records)
    assert entry["metrics"]["ll_per_char"]["value"] == pytest.approx(per_char)
    assert entry["metrics"]["answer_ll"]["value"] == pytest.approx(float(np.mean(expected)))
    assert entry["metrics"]["ll_per_char"]["ci_low"] <= per_char <= entry["metrics"]["ll_per_char"]["ci_high"]
    assert run.summary["model"]["toy"]["ll_per_char"] == pytest.approx(per_char)
    same = compare_results(res, res, n_boot=100).tasks[0]
    assert same.primary == "ll_per_char" and same.primary_delta.delta == 0 and math.isfinite(same.primary_delta.base)


def test_an_unregistered_type_is_refused_when_the_suite_loads_and_names_the_registered_ones(tmp_path):
    suite_path, _ = _suite(tmp_path)
    with pytest.raises(ConfigError, match="type: must be one of generation, perplexity, multiple_choice"):
        load_suite(suite_path)
    with pytest.raises(ValueError, match="did you mean 'perplexity'"):
        get_task_type("perplexty")

"""The leaderboard tasks equal lm-evaluation-harness's own: the same prompts, the same few-shot draws,
and the same acc / acc_norm / MC2 on the same tiny model and the same local files.

lm-eval runs its installed task configs, changed only to read our fixtures (dataforge.eval.lm_eval_parity).
"""

from __future__ import annotations

import pytest

from dataforge.eval.config import EvalOptions
from dataforge.eval.leaderboard import MMLU_SUBJECTS, viewer_for
from dataforge.eval.lm_eval_parity import lm_eval_scores
from dataforge.eval.multiple_choice import load_questions
from dataforge.eval.results import load_results
from dataforge.eval.runner import run_suite
from dataforge.eval.serving import load_targets
from dataforge.eval.tasks import load_suite, read_records
from dataforge.models import resolve_model
from dataforge.paths import evals_dir

pytest.importorskip("lm_eval", reason="the parity check needs lm-eval (pip install lm-eval)")


@pytest.fixture(scope="module")
def suite():
    return load_suite(evals_dir() / "leaderboard.yaml")


def test_the_mmlu_fixture_covers_all_57_subjects_with_five_dev_questions_each(suite):
    (mmlu,) = [t for t in suite.tasks if t.name == "mmlu"]
    dev = [r["subject"] for r in read_records(mmlu, "dev").rows]
    assert sorted(set(dev)) == sorted(MMLU_SUBJECTS) and len(MMLU_SUBJECTS) == 57
    assert all(dev.count(s) == 5 for s in MMLU_SUBJECTS)


def test_prompts_and_scores_equal_lm_eval_on_the_tiny_model(suite, tmp_path):
    from lm_eval.models.huggingface import HFLM

    theirs = lm_eval_scores(suite.tasks, HFLM(pretrained=resolve_model("tiny"), dtype="float32", batch_size=16,
                                              device="cpu"), tmp_path / "lm_eval")
    for task in suite.tasks:
        ours = [q.requests() for q in load_questions(task, *viewer_for(task.spec))]
        want = theirs.requests[task.name]
        if task.name == "mmlu":   # lm-eval runs subject by subject, we run the file in order
            ours, want = sorted(ours), sorted(want)
        assert ours == want, task.name

    options = EvalOptions(batch_size=16, device="cpu", cache_dir=None, n_boot=100, progress=False)
    targets, tokenizer = load_targets("tiny", None, tmp_path / "ours", None, options)
    run_suite(suite, targets, options, tokenizer)
    ours = load_results(tmp_path / "ours")
    compared = 0
    for task, metrics in theirs.scores.items():
        for metric, value in metrics.items():
            assert ours.value(task, metric) == pytest.approx(value, abs=1e-4), (task, metric)
            compared += 1
    assert compared == 10    # acc and acc_norm of ARC-E/C and HellaSwag, MMLU both ways, MC1 acc, MC2

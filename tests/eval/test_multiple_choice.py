"""Multiple-choice scoring: lm-eval's acc/acc_norm/mc2, seeded few-shot draws, and batched, packed
loglikelihoods that equal one plain forward pass per request."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from dataforge.errors import InputError
from dataforge.eval.leaderboard import viewer_for
from dataforge.eval.lm import SHARED_PREFIX_MIN, HFLanguageModel, pack_blocks
from dataforge.eval.multiple_choice import (
    DocView,
    ShotSampler,
    build_context,
    choice_scores,
    load_questions,
    macro_weights,
)
from dataforge.eval.tasks import FewshotSpec, load_task
from dataforge.models import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny"), load_tokenizer("tiny")


def plain_loglikelihood(model, tok, ctx: str, cont: str, max_len: int) -> float:
    """One request the way lm-eval's HFLM scores it, written out: no batching, packing or cache."""
    n = len(ctx) - len(ctx.rstrip())
    if n:
        ctx, cont = ctx[:-n], ctx[-n:] + cont
    c = tok(ctx)["input_ids"]
    cont_ids = tok(ctx + cont)["input_ids"][len(c):]
    inp = (c + cont_ids)[-(max_len + 1):][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].double(), -1)
    start = len(inp) - len(cont_ids)
    return float(sum(logp[start + j, t] for j, t in enumerate(cont_ids)))


def test_acc_and_acc_norm_are_lm_eval_definitions_with_ties_to_the_first():
    view = DocView(query="q", choices=("a", "bbbb", "cc"), gold=1)
    # raw: "a" wins; per character: -2/1, -4/4, -3/2 -> "bbbb" wins
    got = choice_scores([-2.0, -4.0, -3.0], view)
    assert (got["pred"], got["pred_norm"]) == (0, 1)
    assert got["metrics"] == {"acc": 0.0, "acc_norm": 1.0}
    tie = choice_scores([-1.0, -1.0, -5.0], DocView(query="q", choices=("x", "y", "z"), gold=1))
    assert tie["pred"] == 0 and tie["metrics"]["acc"] == 0.0


def test_mc2_is_the_probability_mass_of_the_true_answers():
    view = DocView(query="q", choices=("t1", "f1", "t2", "f2"), gold=0, true_choices=(0, 2))
    ll = [-1.0, -2.0, -0.5, -3.0]
    p = [math.exp(x) for x in ll]
    assert choice_scores(ll, view)["metrics"]["mc2"] == pytest.approx((p[0] + p[2]) / sum(p), abs=1e-12)


def test_macro_weights_turn_a_sample_mean_into_the_mean_of_group_means():
    groups = ["a"] * 6 + ["b"] * 2 + ["c"]
    acc = [1, 1, 0, 0, 0, 0, 1, 0, 1]
    w = macro_weights(groups)
    macro = sum(a * x for a, x in zip(acc, w, strict=True)) / len(acc)
    assert macro == pytest.approx((2 / 6 + 1 / 2 + 1 / 1) / 3)


def test_fewshot_draw_is_one_seeded_random_whose_state_carries_from_doc_to_doc():
    pool = [({"i": i}, DocView(query=f"q{i}", choices=("x",), gold=0)) for i in range(10)]
    sampler = ShotSampler(pool, FewshotSpec(seed=1234))
    got = [[v.query for v in sampler.sample(3, {"i": -1})] for _ in range(3)]
    rnd = random.Random(1234)
    want = [[f"q{d['i']}" for d, _ in rnd.sample(pool, 3)] for _ in range(3)]
    assert got == want and got[0] != got[1]


def test_excluding_the_eval_doc_draws_one_extra_and_drops_it():
    pool = [({"i": i}, DocView(query=f"q{i}", choices=("x",), gold=0)) for i in range(6)]
    sampler = ShotSampler(pool, FewshotSpec(seed=7, exclude_eval_doc=True))
    for _ in range(20):
        shots = sampler.sample(5, {"i": 2})
        assert len(shots) == 5 and "q2" not in [s.query for s in shots]


def test_context_is_description_then_solved_examples_then_the_question():
    shots = [DocView(query="Q: 1+1?\nA:", choices=("2", "3"), gold=0), DocView(query="Q: 2+1?\nA:", choices=("2", "3"), gold=1)]
    view = DocView(query="Q: 3+1?\nA:", choices=("4", "5"), gold=0, description="Sums.\n\n")
    assert build_context(view, shots) == "Sums.\n\nQ: 1+1?\nA: 2\n\nQ: 2+1?\nA: 3\n\nQ: 3+1?\nA:"


def _fields_task(tmp_path: Path, rows: list[dict], shots: int = 0) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    for split in ("test", "train"):
        (tmp_path / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "t.yaml"
    task.write_text("name: t\ntype: multiple_choice\ndata: {path: data}\nprompt: \"Question: {q}\\nAnswer:\"\n"
                    f"choices: options\ngold: answer\nshots: {shots}\n")
    return task


def test_a_gold_answer_outside_the_choices_names_file_line_and_field(tmp_path):
    rows = [{"q": "ok", "options": ["a", "b"], "answer": 1}, {"q": "bad", "options": ["a", "b"], "answer": 5}]
    task = load_task(_fields_task(tmp_path, rows))
    with pytest.raises(InputError, match=r"test.jsonl:2: field 'answer': gold answer 5 is outside the 2 choices"):
        load_questions(task, *viewer_for(task.spec))


def test_a_gold_answer_may_be_the_choice_text_and_must_be_one_of_them(tmp_path):
    task = load_task(_fields_task(tmp_path, [{"q": "x", "options": ["yes", "no"], "answer": "no"}], shots=1))
    (q,) = load_questions(task, *viewer_for(task.spec))
    assert q.view.gold == 1 and q.context == "Question: x\nAnswer: no\n\nQuestion: x\nAnswer:"
    task = load_task(_fields_task(tmp_path, [{"q": "x", "options": ["yes", "no"], "answer": "maybe"}]))
    with pytest.raises(InputError, match=r"field 'answer': gold answer 'maybe' is not one of the choices"):
        load_questions(task, *viewer_for(task.spec))


def test_too_few_examples_for_the_shots_is_an_input_error(tmp_path):
    task = load_task(_fields_task(tmp_path, [{"q": "x", "options": ["a", "b"], "answer": 0}], shots=3))
    with pytest.raises(InputError, match="3 examples needed from split 'train', but only 1 there"):
        load_questions(task, *viewer_for(task.spec))


def test_contexts_sharing_a_prefix_share_a_row_and_every_request_is_scored_once():
    shared = tuple(range(100, 100 + SHARED_PREFIX_MIN + 8))
    groups = {shared + (1, 2): [((5, 6), 0), ((7,), 1)], shared + (3,): [((8, 9, 10), 2)], (4, 4, 4): [((1,), 3)]}
    blocks = pack_blocks(groups)
    assert len(blocks) == 2
    big = max(blocks, key=lambda b: len(b.prefix))
    assert big.prefix == shared and sorted(e.suffix for e in big.entries) == [(1, 2), (3,)]
    seen = sorted(i for b in blocks for e in b.entries for _, i in e.members)
    assert seen == [0, 1, 2, 3]


def test_packed_batched_scores_equal_one_plain_forward_per_request(tiny):
    model, tok = tiny
    shots = "".join(f"Question: what is item {i} made of?\nAnswer: item {i} is made of wood.\n\n" for i in range(6))
    requests = [
        (shots + "Question: what is the box made of?\nAnswer:", " cardboard and glue"),
        (shots + "Question: what is the box made of?\nAnswer:", " steel"),
        (shots + "Question: what is the cup made of?\nAnswer:", " clay from the river bank"),
        ("The sky is ", "blue today."),                       # trailing space moves to the continuation
        ("", "A sentence with no context at all."),           # conditioned on the prefix token
        ("Short context.", " x"),
        (shots + "Question: what is the cup made of?\nAnswer:", " glass"),
    ]
    want = [plain_loglikelihood(model, tok, c, x, 2048) for c, x in requests]
    for batch_size in (1, 3, 16):
        lm = HFLanguageModel(model, tok, name="tiny", fingerprint="t", batch_size=batch_size)
        got = lm.loglikelihood(requests)
        assert got == pytest.approx(want, abs=1e-4), batch_size


def test_contexts_longer_than_the_model_are_cut_from_the_left_like_lm_eval(tiny):
    model, tok = tiny
    ctx = " ".join(f"word{i}" for i in range(80))
    requests = [(ctx, " and then it ended"), (ctx, " stop"), ("tiny context", " and more")]
    lm = HFLanguageModel(model, tok, name="tiny", fingerprint="t", batch_size=4, max_length=48)
    assert lm.loglikelihood(requests) == pytest.approx(
        [plain_loglikelihood(model, tok, c, x, 48) for c, x in requests], abs=1e-4)
    with pytest.raises(InputError, match="does not fit the model's 8-token context"):
        HFLanguageModel(model, tok, name="tiny", fingerprint="t", max_length=8).loglikelihood([("a", " " + ctx)])

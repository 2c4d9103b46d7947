"""Eval targets: a bitsandbytes copy of the model scored like a tune, and the manifest naming which
engine scored what."""

from __future__ import annotations

import pytest

from dataforge.eval.compare import compare_results
from dataforge.eval.config import EvalConfig
from dataforge.eval.evaluate import evaluate
from dataforge.eval.results import load_results

pytest.importorskip("bitsandbytes")


def _eval(out, quantize: str):
    cfg = EvalConfig(suite="leaderboard", model="tiny", out=out, tasks=["truthfulqa_mc2"], history=False,
                     options={"limit": 10, "n_boot": 200, "cache_dir": None, "progress": False, "device": "cpu",
                              "quantize": quantize})
    _, run = evaluate(cfg)
    return run.folders[0]


def test_a_4bit_copy_is_compared_with_full_precision_like_a_tune(tmp_path):
    full, quant = _eval(tmp_path / "fp32", "none"), _eval(tmp_path / "nf4", "4bit")
    a, b = load_results(full), load_results(quant)
    assert b.manifest["quantize"] == "4bit" and a.manifest["quantize"] == "none"
    assert a.manifest["model_fingerprint"] != b.manifest["model_fingerprint"]      # separate cache entries
    assert b.manifest["backends"] == {"generation": "transformers", "loglikelihood": "transformers"}
    comp = compare_results(a, b, n_boot=200)
    [task] = comp.tasks
    delta = task.primary_delta
    assert task.n_paired == 10
    # quantizing moved the scores; the delta is the two runs' difference, with an interval around it
    assert delta.delta != 0 and delta.delta == pytest.approx(delta.tuned - delta.base)
    assert delta.ci_low <= delta.delta <= delta.ci_high


def _random_lora(path, seed: int) -> str:
    import torch
    from peft import LoraConfig, get_peft_model

    from dataforge.models import load_causal_lm

    torch.manual_seed(seed)
    model = get_peft_model(load_causal_lm("tiny"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False))
    model.save_pretrained(str(path / "adapter"))
    return str(path / "adapter")


def test_several_adapters_from_one_load_score_as_each_would_alone(tmp_path):
    a, b = _random_lora(tmp_path / "tune_a", 1), _random_lora(tmp_path / "tune_b", 2)
    opts = {"limit": 3, "n_boot": 100, "cache_dir": None, "progress": False, "device": "cpu"}
    common = {"suite": "leaderboard", "model": "tiny", "tasks": ["truthfulqa_mc2"], "history": False, "options": opts}
    _, both = evaluate(EvalConfig(out=tmp_path / "both", adapters=[a, b], **common))
    assert both.folders == [tmp_path / "both" / "tune_a", tmp_path / "both" / "tune_b"]
    _, alone = evaluate(EvalConfig(out=tmp_path / "alone", adapters=[b], **common))
    rows = [[r["metrics"] for r in load_results(f).rows("truthfulqa_mc2")] for f in (*both.folders, alone.folders[0])]
    assert rows[1] == rows[2] and rows[0] != rows[1]

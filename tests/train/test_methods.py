"""Every method goes through the same loop: each learns, and what it saves loads back and scores the same."""

from __future__ import annotations

import json

import pytest
from train_helpers import independent_eval_losses

from dataforge.config.base import validate_config
from dataforge.models import resolve_model
from dataforge.train.config import TrainConfig
from dataforge.train.loop import train


def _run(method: str, build_run, out, lr: float, **extra):
    cfg = validate_config(TrainConfig, {
        "method": method, "output": str(out), "seed": 5, "data": {"path": str(build_run)},
        "train": {"learning_rate": lr, "max_steps": 8, "batch_size": 4},
        "eval": {"at_start": True, "batch_size": 16}, **extra})
    result = train(cfg, show_progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return result.manifest, log[0]


def _val(build_run):
    import datasets

    return datasets.load_from_disk(str(build_run / "tokenized"))["val"]


@pytest.mark.parametrize("method, lr, options, min_drop", [
    ("ia3", 1e-1, {}, 0.1),
    ("prompt_tuning", 3e-1, {"num_virtual_tokens": 8}, 0.015),  # 8 soft tokens move the loss slowly
])
def test_other_peft_methods_learn_and_their_adapter_loads(method, lr, options, min_drop, tmp_path, build_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    manifest, start = _run(method, build_run, tmp_path / method, lr, peft_options=options)
    stats = manifest["stats"]
    assert stats["final_eval_domain_loss"] < start["eval_domain_loss"] - min_drop, (start, stats)
    assert manifest["model"]["peft_config"]["peft_type"].lower() == method
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    model = PeftModel.from_pretrained(base, str(tmp_path / method / "adapter")).eval()
    for src, value in independent_eval_losses(model, _val(build_run)).items():
        assert stats[f"final_eval_{src}_loss"] == pytest.approx(value, abs=1e-4)


def test_full_tuning_saves_a_whole_model(tmp_path, build_run):
    from transformers import AutoModelForCausalLM

    manifest, start = _run("full", build_run, tmp_path / "full", 1e-3)
    stats = manifest["stats"]
    assert stats["final_eval_domain_loss"] < start["eval_domain_loss"] - 0.05
    assert manifest["weights"]["kind"] == "full_model"
    assert manifest["model"]["trainable_params"] == manifest["model"]["total_params"]
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full" / "adapter")).eval()
    for src, value in independent_eval_losses(model, _val(build_run)).items():
        assert stats[f"final_eval_{src}_loss"] == pytest.approx(value, abs=1e-4)


def test_qlora_run_learns_on_cpu_with_eval_passes_in_between(tmp_path, build_run):
    pytest.importorskip("bitsandbytes")
    manifest, start = _run("qlora", build_run, tmp_path / "qlora", 1e-2,
                           eval={"at_start": True, "every_steps": 2, "batch_size": 16})
    assert manifest["stats"]["final_eval_domain_loss"] < start["eval_domain_loss"] - 0.05
    assert manifest["config"]["quantization"]["quant_type"] == "nf4"

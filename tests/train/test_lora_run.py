"""A short LoRA run on the tiny model: it learns, and everything it writes is what it claims to be."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import independent_eval_losses

from dataforge.config.base import validate_config
from dataforge.models import model_fingerprint
from dataforge.train.config import TrainConfig
from dataforge.train.loop import train


def _config(build_run, out, **over) -> TrainConfig:
    data = {
        "model": "tiny", "method": "lora", "seed": 3, "output": str(out),
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
        "data": {"path": str(build_run)},
        "train": {"learning_rate": 3e-3, "max_steps": 30, "batch_size": 4, "warmup_steps": 3},
        "eval": {"every_steps": 15, "at_start": True, "batch_size": 16},
        "checkpoint": {"every_steps": 100},
    }
    data.update(over)
    return validate_config(TrainConfig, data)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, build_run):
    out = tmp_path_factory.mktemp("lora") / "run"
    result = train(_config(build_run, out), show_progress=False)
    return out, result.manifest


def test_lora_lowers_the_domain_eval_loss(lora_run):
    out, manifest = lora_run
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    start = next(r for r in log if r["step"] == 0)
    assert manifest["stats"]["final_eval_domain_loss"] < start["eval_domain_loss"] - 0.05
    first_step = next(r for r in log if r["step"] == 1 and "loss" in r)
    assert manifest["stats"]["final_loss"] < first_step["loss"]


def test_adapter_loads_with_peft_and_reproduces_the_reported_eval_losses(lora_run, build_run):
    import datasets
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataforge.models import resolve_model

    out, manifest = lora_run
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    val = datasets.load_from_disk(str(build_run / "tokenized"))["val"]
    expected = independent_eval_losses(model, val)
    for src, value in expected.items():
        assert manifest["stats"][f"final_eval_{src}_loss"] == pytest.approx(value, abs=1e-4)
    assert set(expected) == {"domain", "general"}


def test_log_curve_and_manifest_describe_the_run(lora_run, build_run):
    out, manifest = lora_run
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert all(r["trained_tokens"] <= r["tokens"] and r["trained_tokens_per_s"] > 0 for r in steps)
    assert sorted(r["step"] for r in log if "eval_loss" in r) == [0, 15, 30]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    build_manifest = json.loads((build_run / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["base_model"]["weights_fingerprint"] == model_fingerprint("tiny")
    assert manifest["data"]["fingerprint"] == build_manifest["fingerprint"]
    assert manifest["template"] == json.loads((build_run / "template.json").read_text())
    assert json.loads((out / "adapter" / "template.json").read_text()) == manifest["template"]
    assert manifest["config"]["lora"]["r"] == 8
    assert {"torch", "transformers", "peft", "accelerate"} <= set(manifest["libraries"])
    stats = manifest["stats"]
    assert 0 < stats["trained_tokens_per_s"] <= stats["tokens_per_s"]
    assert 0 <= stats["padding_fraction"] < 1 and stats["peak_memory_bytes"] > 0
    # trained tokens per second agree with the log's own counts and the measured step times
    assert sum(r["trained_tokens"] for r in steps) == pytest.approx(
        sum(r["trained_tokens"] / r["trained_tokens_per_s"] for r in steps) * stats["trained_tokens_per_s"], rel=0.01)
    assert set(manifest["model"]["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"}


def test_export_merge_writes_a_model_equal_to_base_plus_adapter(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataforge.models import resolve_model
    from dataforge.train.export import export_run

    out, _ = lora_run
    merged_dir = export_run(out, tmp_path / "merged", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    peft_model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    ids = torch.randint(3, 4000, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert json.loads((merged_dir / "export_manifest.json").read_text())["merged"] is True
    assert (merged_dir / "tokenizer.json").is_file() and (merged_dir / "template.json").is_file()


def test_export_cli_copies_a_standalone_adapter_and_refuses_an_unfinished_run(lora_run, tmp_path):
    from peft import PeftModel
    from train_helpers import run_cli
    from transformers import AutoModelForCausalLM

    from dataforge.models import resolve_model

    out, _ = lora_run
    res = run_cli("export", str(out), "-o", str(tmp_path / "adapter"))
    assert res.returncode == 0, res.stderr[-2000:]
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "export_manifest.json").read_text())["merged"] is False

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text(json.dumps({"kind": "train", "complete": False}))
    res = run_cli("export", str(unfinished), "--merge", "-o", str(tmp_path / "m"))
    assert res.returncode == 2 and "did not finish" in res.stderr and "Traceback" not in res.stderr

"""How a tune is served: the path each adapter takes, the cached merge, and the refusal to score an
adapter that leaves the model unchanged (it would report the base model's numbers as the tune's)."""

from __future__ import annotations

import os

import pytest
import torch

from dataforge.errors import InputError
from dataforge.generate.adapters import max_lora_rank, merge_key, merged_model, plan_adapters, read_adapter
from dataforge.models import load_causal_lm


def _save(path, config, init=True):
    from peft import get_peft_model

    model = get_peft_model(load_causal_lm("tiny"), config)
    if init is False:
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    model.save_pretrained(str(path))
    return str(path)


def _config(path, config):
    config.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from peft import IA3Config, LoraConfig, PromptTuningConfig

    root = tmp_path_factory.mktemp("adapters")
    lora = dict(target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return {
        "lora": _save(root / "lora", LoraConfig(r=12, **lora), init=False),
        "untrained": _save(root / "untrained", LoraConfig(r=4, **lora)),
        # the serving plan reads only adapter_config.json, as peft writes it for these methods
        "dora": _config(root / "dora", LoraConfig(r=4, use_dora=True, **lora)),
        "head": _config(root / "head", LoraConfig(r=4, modules_to_save=["lm_head"], **lora)),
        "ia3": _config(root / "ia3", IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                               feedforward_modules=["down_proj"], task_type="CAUSAL_LM")),
        "prompt": _config(root / "prompt", PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")),
    }


def test_one_adapter_or_a_cpu_is_served_merged_and_many_on_a_gpu_share_one_lora_engine(adapters):
    assert [p.mode for p in plan_adapters([adapters["lora"]], "auto", on_gpu=True)] == ["merged"]
    assert [p.mode for p in plan_adapters([adapters["lora"], adapters["untrained"]], "auto", on_gpu=False)] \
        == ["merged", "merged"]
    assert [p.mode for p in plan_adapters([adapters["lora"], adapters["untrained"]], "auto", on_gpu=True)] \
        == ["multi-lora", "multi-lora"]
    assert [p.mode for p in plan_adapters([adapters["lora"]], "multi-lora", on_gpu=False)] == ["multi-lora"]
    # rank 12 needs vLLM's next allowed max_lora_rank, 16
    assert max_lora_rank([read_adapter(adapters["lora"]), read_adapter(adapters["untrained"])]) == 16


@pytest.mark.parametrize("kind, mode, why", [
    ("dora", "merged", "DoRA"),
    ("head", "merged", "lm_head"),
    ("ia3", "merged", "IA3 is not LoRA"),
    ("prompt", "transformers", "adds virtual tokens"),
])
def test_adapters_vllm_cannot_serve_as_lora_take_another_path_with_a_notice(adapters, kind, mode, why):
    [plan] = plan_adapters([adapters[kind]], "multi-lora", on_gpu=True)
    assert plan.mode == mode and why in plan.notice and adapters[kind] in plan.notice
    assert "\n" not in plan.notice


def test_an_adapter_that_leaves_the_logits_unchanged_is_refused_before_scoring(adapters, tmp_path):
    from dataforge.eval.config import EvalOptions
    from dataforge.eval.serving import load_targets

    options = EvalOptions(device="cpu", cache_dir=None, progress=False)
    with pytest.raises(InputError, match="leaves the model's logits unchanged"):
        load_targets("tiny", [adapters["lora"], adapters["untrained"]], [tmp_path / "a", tmp_path / "b"], None,
                     options)
    targets, _ = load_targets("tiny", [adapters["lora"]], [tmp_path / "a"], tmp_path / "base", options)
    assert [t.label for t in targets] == ["base", "tuned"]


def test_the_merge_is_cached_by_content_and_matches_the_adapter(adapters, tmp_path):
    from peft import PeftModel

    first = merged_model("tiny", adapters["lora"], root=tmp_path)
    stamp = os.stat(first / "model.safetensors").st_mtime_ns
    assert merged_model("tiny", adapters["lora"], root=tmp_path) == first
    assert os.stat(first / "model.safetensors").st_mtime_ns == stamp          # reused, not redone
    assert merge_key("tiny", adapters["lora"]) != merge_key("tiny", adapters["untrained"])
    ids = torch.tensor([[1, 57, 300, 912, 45]])
    peft = PeftModel.from_pretrained(load_causal_lm("tiny"), adapters["lora"])
    with torch.inference_mode():
        want = peft(input_ids=ids).logits
        got = load_causal_lm(str(first))(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)

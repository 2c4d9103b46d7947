"""The `preference` task type through a whole suite: base and tuned targets, aggregate, compare.

The tuned side is a real LoRA adapter on the tiny model with seeded random weights, so its implicit
reward is non-zero; the expected numbers are recomputed here from the model's own forward passes with
the adapter on and off.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataforge.eval.compare import compare_results
from dataforge.eval.config import EvalOptions
from dataforge.eval.results import load_results
from dataforge.eval.runner import run_suite
from dataforge.eval.serving import load_targets
from dataforge.eval.tasks import load_suite
from dataforge.paths import DEMO_DATA_DIR

N_PAIRS = 12


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dataforge.models import load_tokenizer, resolve_model

    path = tmp_path_factory.mktemp("adapter") / "adapter"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("tiny")),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(str(path))
    load_tokenizer("tiny").save_pretrained(str(path))
    return path


def _suite(tmp_path):
    lines = (DEMO_DATA_DIR / "preference" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()[:N_PAIRS]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "pref.yaml").write_text("name: pairs\ntype: preference\ndata: {path: pairs.jsonl}\n")
    (tmp_path / "suite.yaml").write_text("name: prefs\ntasks: [{task: pref.yaml, tag: domain}]\n")
    return tmp_path / "suite.yaml", [json.loads(x) for x in lines]


def _expected_margins(adapter, pairs) -> np.ndarray:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataforge.models import load_tokenizer, resolve_model

    tok = load_tokenizer("tiny")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model("tiny")), str(adapter)).eval()

    def logp(prompt_ids, completion_ids, use_adapter: bool) -> float:
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            if use_adapter:
                logits = model(input_ids=ids).logits
            else:
                with model.disable_adapter():
                    logits = model(input_ids=ids).logits
        lp = logits[0, len(prompt_ids) - 1:-1].log_softmax(-1)
        return lp[torch.arange(len(completion_ids)), torch.tensor(completion_ids)].sum().item()

    out = []
    for p in pairs:
        user = p["instruction"].strip() + (f"\n\n{p['input'].strip()}" if p["input"].strip() else "")
        prompt = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)
        pids = tok(prompt, add_special_tokens=False)["input_ids"]
        c, r = (tok(p[k].strip() + tok.eos_token, add_special_tokens=False)["input_ids"] for k in ("chosen", "rejected"))
        out.append((logp(pids, c, True) - logp(pids, c, False)) - (logp(pids, r, True) - logp(pids, r, False)))
    return np.array(out)


def test_preference_task_scores_implicit_reward_accuracy_and_margin_for_base_and_tuned(tmp_path, adapter):
    suite_path, pairs = _suite(tmp_path)
    options = EvalOptions(batch_size=8, device="cpu", cache_dir=None, n_boot=200, progress=False)
    targets, tok = load_targets("tiny", str(adapter), tmp_path / "tuned", tmp_path / "base", options)
    run_suite(load_suite(suite_path), targets, options, tok)
    tuned, base = load_results(tmp_path / "tuned"), load_results(tmp_path / "base")

    expected = _expected_margins(adapter, pairs)
    entry = tuned.task("pairs")
    assert entry["type"] == "preference" and entry["primary_metric"] == "accuracy" and entry["n"] == N_PAIRS
    assert entry["metrics"]["margin"]["value"] == pytest.approx(expected.mean(), abs=1e-3)
    acc = np.where(expected > 0, 1.0, 0.0).mean()
    assert entry["metrics"]["accuracy"]["value"] == pytest.approx(acc)
    assert entry["metrics"]["accuracy"]["ci_low"] <= acc <= entry["metrics"]["accuracy"]["ci_high"]
    # The base model is its own reference: every pair is a tie.
    b = base.task("pairs")["metrics"]
    assert b["accuracy"]["value"] == 0.5 and b["margin"]["value"] == 0.0
    cmp = compare_results(base, tuned, n_boot=100).tasks[0]
    assert cmp.primary == "accuracy" and cmp.primary_delta.delta == pytest.approx(acc - 0.5)


def test_preference_task_names_the_record_and_field_of_a_missing_completion(tmp_path):
    from dataforge.errors import InputError

    suite_path, _ = _suite(tmp_path)
    rows = (tmp_path / "pairs.jsonl").read_text().splitlines()
    bad = json.loads(rows[2])
    del bad["rejected"]
    rows[2] = json.dumps(bad)
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    options = EvalOptions(batch_size=8, device="cpu", cache_dir=None, n_boot=100, progress=False)
    targets, tok = load_targets("tiny", None, tmp_path / "model", None, options)
    with pytest.raises(InputError) as err:
        run_suite(load_suite(suite_path), targets, options, tok)
    assert "pairs.jsonl" in str(err.value) and "3" in str(err.value) and "rejected" in str(err.value)

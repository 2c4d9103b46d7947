"""The eval runner: results folders for a model and its adapter from one load, a per-sample cache an
interrupted eval resumes from, and generation tasks prompted with the template the model trained on."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataforge.data.templates import load_template, render
from dataforge.errors import InputError
from dataforge.eval import runner
from dataforge.eval.config import EvalOptions
from dataforge.eval.results import load_results
from dataforge.eval.runner import run_suite
from dataforge.eval.serving import load_targets
from dataforge.eval.task_types.generation import generation_prompts
from dataforge.eval.tasks import load_suite, load_task
from dataforge.models import load_causal_lm
from dataforge.paths import evals_dir


def _options(cache: Path | None) -> EvalOptions:
    return EvalOptions(batch_size=8, device="cpu", cache_dir=cache, n_boot=100, progress=False)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it really changes the model's outputs."""
    from peft import LoraConfig, get_peft_model

    path = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(load_causal_lm("tiny"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False))
    model.save_pretrained(path)
    return path


class CountingLM:
    """The real model, counting the questions it is asked to score; optionally stops after some calls
    as a killed run would."""

    def __init__(self, lm, stop_after: int | None = None):
        self.lm, self.stop_after, self.calls, self.requests = lm, stop_after, 0, 0
        self.name, self.fingerprint, self.max_length = lm.name, lm.fingerprint, lm.max_length

    def loglikelihood(self, requests, progress=None):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.requests += len(requests)
        return self.lm.loglikelihood(requests, progress)


def _tqa_suite():
    return load_suite(evals_dir() / "leaderboard.yaml", only=["truthfulqa_mc1"])


def test_an_interrupted_eval_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK", 3)
    suite, cache = _tqa_suite(), tmp_path / "cache"
    targets, tok = load_targets("tiny", None, tmp_path / "res", None, _options(cache))
    real = targets[0].lm
    targets[0].lm = CountingLM(real, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, targets, _options(cache), tok)
    assert not (tmp_path / "res").exists()
    (cache_file,) = cache.rglob("truthfulqa_mc1.jsonl")
    assert len(cache_file.read_text().splitlines()) == 6          # two chunks of three questions landed

    targets[0].lm = resumed = CountingLM(real)
    run_suite(suite, targets, _options(cache), tok)
    n_choices = [len(r["choices"]) for r in load_results(tmp_path / "res").rows("truthfulqa_mc1")]
    assert resumed.requests == sum(n_choices[6:])                 # only the 4 questions not yet scored

    targets[0].lm = again = CountingLM(real)
    run_suite(suite, targets, _options(cache), tok)
    assert again.calls == 0                                       # everything now comes from the cache

    fresh, tok = load_targets("tiny", None, tmp_path / "fresh", None, _options(None))
    run_suite(suite, fresh, _options(None), tok)
    a, b = load_results(tmp_path / "res"), load_results(tmp_path / "fresh")
    assert [r["ll"] for r in a.rows("truthfulqa_mc1")] == [r["ll"] for r in b.rows("truthfulqa_mc1")]
    assert a.metrics["truthfulqa_mc1"]["metrics"] == b.metrics["truthfulqa_mc1"]["metrics"]


def test_base_and_tuned_come_from_one_load_and_the_base_is_the_bare_model(tmp_path, adapter):
    suite = _tqa_suite()
    targets, tok = load_targets("tiny", str(adapter), tmp_path / "tuned", tmp_path / "base", _options(None))
    assert [t.label for t in targets] == ["base", "tuned"]
    assert targets[0].lm.model is targets[1].lm.model
    run_suite(suite, targets, _options(None), tok)
    bare, tok = load_targets("tiny", None, tmp_path / "bare", None, _options(None))
    run_suite(suite, bare, _options(None), tok)
    base, tuned, plain = (load_results(tmp_path / n) for n in ("base", "tuned", "bare"))
    ll = {name: [x for r in res.rows("truthfulqa_mc1") for x in r["ll"]] for name, res in
          (("base", base), ("tuned", tuned), ("bare", plain))}
    assert ll["base"] == pytest.approx(ll["bare"], abs=1e-5)
    assert max(abs(a - b) for a, b in zip(ll["tuned"], ll["bare"], strict=True)) > 1e-3
    assert tuned.manifest["adapter"] == str(adapter) and base.manifest["adapter"] is None
    assert tuned.manifest["model_fingerprint"] != base.manifest["model_fingerprint"]
    assert base.suite_fingerprint == tuned.suite_fingerprint


def test_an_adapter_made_for_another_model_is_an_input_error(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "bad")
    with pytest.raises(InputError, match="does not match base model 'tiny'"):
        load_targets("tiny", str(tmp_path / "bad"), tmp_path / "out", None, _options(None))


def _generation_suite(tmp_path: Path) -> Path:
    records = [
        {"instruction": "Name the capital of France.", "input": "", "output": "Paris", "source": "domain"},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "source": "domain"},
        {"instruction": "Say hello.", "input": "", "output": "Hello!", "source": "general"},
        {"instruction": "Spell cat backwards.", "input": "", "output": "tac", "source": "domain"},
    ]
    (tmp_path / "build" / "splits").mkdir(parents=True)
    pl.DataFrame(records).write_parquet(tmp_path / "build" / "splits" / "test.parquet")
    (tmp_path / "gen.yaml").write_text(
        "name: gen\ntype: generation\ndata: {path: '${build}/splits/test.parquet', where: {source: domain}}\n"
        "template: alpaca\nmax_tokens: 6\nscoring: {metrics: [rouge, exact_match]}\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: gen_suite\nvars: {{build: {tmp_path / 'build'}}}\ntasks: [{{task: gen.yaml, tag: domain}}]\n")
    return suite


def test_generation_is_prompted_with_the_task_template_and_scored(tmp_path):
    suite = load_suite(_generation_suite(tmp_path))
    targets, tok = load_targets("tiny", None, tmp_path / "res", None, _options(None))
    run_suite(suite, targets, _options(None), tok)
    res = load_results(tmp_path / "res")
    rows = res.rows("gen")
    alpaca = load_template("alpaca")
    assert [r["prompt"] for r in rows] == [
        render(alpaca, "Name the capital of France.", "")[0], render(alpaca, "Add the numbers.", "2 and 3")[0],
        render(alpaca, "Spell cat backwards.", "")[0]]
    assert [r["reference"] for r in rows] == ["Paris", "5", "tac"]
    assert all(isinstance(r["prediction"], str) and r["finish_reason"] in ("stop", "length") for r in rows)
    assert {"rougeL", "exact_match"} <= set(res.metrics["gen"]["metrics"])
    assert res.manifest["templates"]["gen"] == {"name": "alpaca", "sha256": alpaca.sha256}


def test_an_adapter_is_prompted_with_its_own_training_template(tmp_path, adapter):
    plain = load_template("plain")
    tuned = tmp_path / "adapter"
    tuned.mkdir()
    for f in adapter.iterdir():
        (tuned / f.name).write_bytes(f.read_bytes())
    (tuned / "template.json").write_text(json.dumps({"name": "plain", "sha256": plain.sha256, "variants": False}))
    suite = load_suite(_generation_suite(tmp_path))
    targets, tok = load_targets("tiny", str(tuned), tmp_path / "res", None, _options(None))
    run_suite(suite, targets, _options(None), tok)
    rows = load_results(tmp_path / "res").rows("gen")
    assert rows[1]["prompt"] == render(plain, "Add the numbers.", "2 and 3")[0]

    (tuned / "template.json").write_text(json.dumps({"name": "plain", "sha256": "0" * 64}))
    targets, tok = load_targets("tiny", str(tuned), tmp_path / "res2", None, _options(None))
    with pytest.raises(InputError, match="template 'plain' changed since the adapter was trained"):
        run_suite(suite, targets, _options(None), tok)


def test_a_generation_record_without_its_reference_names_file_and_line(tmp_path):
    suite = _generation_suite(tmp_path)
    pl.DataFrame([{"instruction": "x", "input": "", "source": "domain"}]).write_parquet(
        tmp_path / "build" / "splits" / "test.parquet")
    targets, tok = load_targets("tiny", None, tmp_path / "res", None, _options(None))
    with pytest.raises(InputError, match=r"test.parquet:0: field 'output': missing field"):
        run_suite(load_suite(suite), targets, _options(None), tok)


def test_generation_fields_may_be_paths_into_nested_records(tmp_path):
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"task": {"instruction": "Name the capital of France."}, "instances": [{"output": "Paris"}]}) + "\n"
        + json.dumps({"task": {"instruction": "Add the numbers."}, "instances": [{"input": "2 and 3", "output": "5"}]})
        + "\n" + json.dumps({"task": {"instruction": "Spell cat backwards."}, "instances": []}) + "\n")
    (tmp_path / "t.yaml").write_text("name: nested\ntype: generation\ndata: {path: test.jsonl}\ntemplate: alpaca\n"
                                     "instruction_field: task.instruction\ninput_field: instances[0].input\n"
                                     "reference_field: instances[0].output\n")
    task = load_task(tmp_path / "t.yaml")
    alpaca = load_template("alpaca")
    items = generation_prompts(task, alpaca, None, limit=2)
    assert [it["reference"] for it in items] == ["Paris", "5"]
    assert items[1]["prompt"] == render(alpaca, "Add the numbers.", "2 and 3")[0]
    with pytest.raises(InputError, match=r"test.jsonl:3: field 'instances\[0\].output': missing field"):
        generation_prompts(task, alpaca, None, limit=None)

"""Eval fixtures shared across modules: real lm-evaluation-harness output on the tiny model.

`lm_eval_runs` runs lm-eval itself (its python API, with the EvaluationTracker its CLI uses, so the
files have lm-eval's real layout: `<out>/<model name>/results_<time>.json` and
`samples_<task>_<time>.jsonl`) on two small tasks written for this project
(tests/eval/fixtures_lm_eval): a 10-question multiple-choice task and a 10-question generate_until
task. The base run is the tiny model with no examples; the tuned run is the tiny model with a
random LoRA adapter and 2 examples per question, so per-document scores differ between the runs.
Run once per session (about 20 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures_lm_eval"


@dataclass(frozen=True)
class LmEvalRuns:
    base: Path          # lm-eval --output_path of the base run
    tuned: Path         # ... of the tuned run (adapter, 2 shots)
    adapter: Path
    tasks: Path         # the lm-eval task YAMLs as run


def _random_adapter(out: Path, model: str) -> Path:
    """A LoRA adapter with random (not zero) weights: a 'tune' that changes some answers, in a second."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                                LoraConfig(r=8, lora_alpha=256, target_modules=["gate_proj", "up_proj", "down_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def _run(tasks: Path, out: Path, model_args: str, shots: int) -> Path:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(**dict(pair.split("=", 1) for pair in model_args.split(",")), batch_size=16, device="cpu")
    # lm-eval caps generation with max_length, which the tiny model's generation_config (max_new_tokens
    # 256) overrides; clear it so max_gen_toks holds, as it does for models without that setting.
    lm.model.generation_config.max_new_tokens = None
    tracker = EvaluationTracker(output_path=str(out))
    res = simple_evaluate(model=lm, model_args=model_args, tasks=["df_mc", "df_gen"], num_fewshot=shots,
                          task_manager=TaskManager(include_path=str(tasks)), log_samples=True,
                          evaluation_tracker=tracker)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    for task in res["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return out


@pytest.fixture(scope="session")
def lm_eval_runs(tmp_path_factory) -> LmEvalRuns:
    pytest.importorskip("lm_eval", reason="the lm-eval interop tests need lm-eval (pip install lm-eval)")
    from dataforge.models import resolve_model

    root = tmp_path_factory.mktemp("lm_eval_runs")
    tiny = str(resolve_model("tiny"))
    tasks = root / "tasks"
    tasks.mkdir()
    for name, data in (("df_mc", "mc.jsonl"), ("df_gen", "gen.jsonl")):
        cfg = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8"))
        cfg["dataset_kwargs"] = {"data_files": {"test": str(FIXTURES / data)}, "cache_dir": str(root / "datasets")}
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    adapter = _random_adapter(root / "adapter", tiny)
    return LmEvalRuns(base=_run(tasks, root / "base", f"pretrained={tiny},dtype=float32", 0),
                      tuned=_run(tasks, root / "tuned", f"pretrained={tiny},peft={adapter},dtype=float32", 2),
                      adapter=adapter, tasks=tasks)

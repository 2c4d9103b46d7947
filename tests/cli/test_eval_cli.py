"""`dataforge eval` as a user runs it: a results folder and a table, or one clear message and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataforge.eval.results import sample_hash

CLI = [sys.executable, "-m", "dataforge"]


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "DATAFORGE_HOME": str(home)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def _assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_eval_writes_a_results_folder_and_prints_each_task(tmp_path):
    proc = run_cli("eval", "leaderboard", "--model", "tiny", "--out", str(tmp_path / "res"), "--task", "mmlu",
                   "--task", "truthfulqa_mc2", "--limit", "6", "--n-boot", "100", "-q", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mmlu" in proc.stdout and "acc_macro" in proc.stdout and "mc2" in proc.stdout
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert set(metrics) == {"mmlu", "truthfulqa_mc2"} and metrics["mmlu"]["n"] == 6
    assert (tmp_path / "eval-cache").is_dir()                  # the default cache lives in DATAFORGE_HOME
    assert (tmp_path / "history.sqlite").is_file()             # and the run was recorded


def _suite_with(tmp_path: Path, task_yaml: str, data: str | None = None) -> Path:
    (tmp_path / "t.yaml").write_text(task_yaml)
    if data is not None:
        (tmp_path / "data.jsonl").write_text(data)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks: [{task: t.yaml, tag: general}]\n")
    return suite


def test_a_task_file_with_a_wrong_schema_is_one_message_naming_file_and_field(tmp_path):
    suite = _suite_with(tmp_path, "name: t\ntype: multiple_choice\ndata: {path: data.jsonl}\nprompt: 'Q: {q}'\n"
                                  "choices: options\ngold: answer\nshots: many\n")
    proc = run_cli("eval", str(suite), "--model", "tiny", "--out", str(tmp_path / "res"), "--no-history", home=tmp_path)
    _assert_user_error(proc, "s.yaml", "tasks.0.task (t.yaml): shots:")


def test_a_gold_answer_outside_the_choices_is_one_message_naming_the_record(tmp_path):
    suite = _suite_with(tmp_path, "name: t\ntype: multiple_choice\ndata: {path: data.jsonl}\nprompt: 'Q: {q}'\n"
                                  "choices: options\ngold: answer\n",
                        '{"q": "a", "options": ["x", "y"], "answer": 0}\n{"q": "b", "options": ["x", "y"], "answer": 2}\n')
    proc = run_cli("eval", str(suite), "--model", "tiny", "--out", str(tmp_path / "res"), "--no-history", home=tmp_path)
    _assert_user_error(proc, "data.jsonl:2: field 'answer': gold answer 2 is outside the 2 choices")
    assert not (tmp_path / "res").exists()


def test_an_empty_corpus_is_one_message(tmp_path):
    suite = _suite_with(tmp_path, "name: t\ntype: perplexity\ndata: {path: c.txt}\n")
    (tmp_path / "c.txt").write_text("\n\n")
    proc = run_cli("eval", str(suite), "--model", "tiny", "--out", str(tmp_path / "res"), "--no-history", home=tmp_path)
    _assert_user_error(proc, "c.txt: empty corpus")


def test_an_adapter_for_another_model_is_one_message(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
        "base_model_name_or_path": "other"}))
    import torch
    from safetensors.torch import save_file

    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 4)},
              str(adapter / "adapter_model.safetensors"))
    proc = run_cli("eval", "leaderboard", "--task", "truthfulqa_mc1", "--model", "tiny", "--adapter", str(adapter),
                   "--out", str(tmp_path / "res"), "--no-history", home=tmp_path)
    _assert_user_error(proc, "does not match base model 'tiny'")


def test_unknown_suites_and_flag_mistakes_are_one_message(tmp_path):
    proc = run_cli("eval", "nightly", "--model", "tiny", "--out", str(tmp_path / "r"), home=tmp_path)
    _assert_user_error(proc, "suite 'nightly' is neither a file nor a shipped suite", "leaderboard", "regression")
    proc = run_cli("eval", "leaderboard", "--model", "tiny", "--out", str(tmp_path / "r"), "--base-out",
                   str(tmp_path / "b"), home=tmp_path)
    _assert_user_error(proc, "base_out: compares a model with and without its adapter (--base-out); "
                             "give --adapter too")
    proc = run_cli("eval", "regression", "--model", "tiny", "--out", str(tmp_path / "r"), "--var", "build",
                   home=tmp_path)
    _assert_user_error(proc, "--var 'build': expected NAME=VALUE")


MC_TASK = ("name: t\ntype: multiple_choice\ndata: {{path: data.jsonl{extra}}}\nprompt: \"Q: {{q}}\\nA:\"\n"
           "choices: options\ngold: answer\nshots: 2\nfewshot: {{split: train, sampler: first_n}}\n")
MC_ROWS = "".join(f'{{"q": "question {i}", "options": ["yes", "no"], "answer": {i % 2}}}\n' for i in range(4))


def test_one_file_task_data_without_its_fewshot_file_fails_before_the_model_loads(tmp_path):
    suite = _suite_with(tmp_path, MC_TASK.format(extra=""), MC_ROWS)
    proc = run_cli("eval", str(suite), "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "res"),
                   "--no-history", home=tmp_path)
    _assert_user_error(proc, "data.jsonl: task t needs split 'train'", "data.fewshot_path")
    suite = _suite_with(tmp_path, MC_TASK.format(extra=", fewshot_path: shots.jsonl"), MC_ROWS)
    proc = run_cli("eval", str(suite), "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "res"),
                   "--no-history", home=tmp_path)
    _assert_user_error(proc, "shots.jsonl: few-shot file does not exist (task t, data.fewshot_path)")


def test_one_file_task_data_draws_its_examples_from_fewshot_path_and_quiet_prints_only_the_summary(tmp_path):
    suite = _suite_with(tmp_path, MC_TASK.format(extra=", fewshot_path: shots.jsonl"), MC_ROWS)
    (tmp_path / "shots.jsonl").write_text('{"q": "solved one", "options": ["yes", "no"], "answer": 0}\n'
                                          '{"q": "solved two", "options": ["yes", "no"], "answer": 1}\n')
    proc = run_cli("eval", str(suite), "--model", "tiny", "--out", str(tmp_path / "res"), "--no-history", "-q",
                   "--no-cache", "--n-boot", "100", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""          # -q: no "Loading weights" bars, no library warnings
    assert "acc" in proc.stdout and "Loading" not in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "res" / "samples" / "t.jsonl").read_text().splitlines()]
    shots = "Q: solved one\nA: yes\n\nQ: solved two\nA: no\n\n"
    assert [r["sample_id"] for r in rows] == [sample_hash(f"{shots}Q: question {i}\nA:") for i in range(4)]


def test_eval_options_are_validated_as_a_config_with_every_problem_and_its_path(tmp_path):
    proc = run_cli("eval", "regression", "--model", "tiny", "--out", str(tmp_path / "r"), "--backend", "vlm",
                   "--quantize", "3bit", "--lora-mode", "fast", home=tmp_path)
    _assert_user_error(proc, "options.backend: unknown backend 'vlm' (did you mean 'vllm'?)",
                       "options.quantize: Input should be 'none', '8bit' or '4bit'", "options.lora_mode:")


def test_lm_eval_model_args_map_onto_eval_flags_and_unknown_keys_are_named():
    from dataforge.cli.evaluate import lm_eval_aliases, parse_model_args
    from dataforge.errors import ConfigError

    assert parse_model_args("pretrained=tiny,peft=runs/a/adapter,dtype=half,load_in_4bit=True,batch_size=4") == {
        "model": "tiny", "adapter": "runs/a/adapter", "dtype": "float16", "quantize": "4bit", "batch_size": "4"}
    assert lm_eval_aliases("vllm", "pretrained=tiny", "transformers") == ("tiny", {}, "vllm")
    assert lm_eval_aliases("tiny", "dtype=bfloat16", "transformers") == ("tiny", {"dtype": "bfloat16"}, "transformers")
    for args, model, message in [
        ("pretrained=tiny,trust_remote_code=True", None, "unsupported key 'trust_remote_code'; supported: pretrained, peft"),
        ("pretrained=tiny,dtype=int8", None, "dtype=int8: use one of float32"),
        ("pretrained", None, "'pretrained': expected KEY=VALUE"),
        ("pretrained=a", "b", "--model b and --model_args pretrained=a: give the model once"),
        ("dtype=float32", None, "needs pretrained=<model>"),
        ("load_in_8bit=True,load_in_4bit=True", "tiny", "load_in_4bit sets quantize, which another key already set"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            lm_eval_aliases(model, args, "transformers")


def test_num_fewshot_sets_every_multiple_choice_tasks_shots_and_refuses_tasks_without_examples():
    from dataforge.errors import ConfigError
    from dataforge.eval.evaluate import with_shots
    from dataforge.eval.tasks import load_suite
    from dataforge.paths import evals_dir

    board = load_suite(evals_dir() / "leaderboard.yaml")
    three = with_shots(board, 3)
    assert [t.spec.shots for t in three.tasks] == [3] * len(board.tasks)
    assert three.fingerprint != board.fingerprint and with_shots(board, 25).tasks[0].spec == board.tasks[0].spec
    regression = load_suite(evals_dir() / "regression.yaml")
    with pytest.raises(ConfigError, match="domain_test_split, general_heldout_perplexity take no few-shot examples"):
        with_shots(regression, 2)
    assert with_shots(regression, 0).tasks[0] == regression.tasks[0]
